"""One module per ``uniq-quant`` subcommand; each exposes ``register(subparsers)``.

``register`` adds its subparser and sets ``handler``: a function of the parsed arguments that
returns the process exit code.
"""
