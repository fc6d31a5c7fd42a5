"""`fedrank` subcommands, one module per area; each exposes `add_parsers(subparsers)`.

`bench.cli` builds the parser from `SUBCOMMAND_MODULES`: adding a command group is adding a
module here and one line there.
"""
