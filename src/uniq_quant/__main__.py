"""``python -m uniq_quant``: the same command line as ``uniq-quant``."""

from uniq_quant.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
