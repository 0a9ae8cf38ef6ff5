"""``python -m covseg`` behaves like the ``covseg`` command."""

from covseg.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
