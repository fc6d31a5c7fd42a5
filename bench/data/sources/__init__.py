"""One module per dataset; each registers a loader with `bench.data.register_dataset`."""
