"""The federated round loop, written once; methods plug in through `bench.methods.Method` hooks."""
