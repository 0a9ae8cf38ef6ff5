"""``python -m covseg`` behaves like the ``covseg`` command."""

from covseg.cli.leave import entry

if __name__ == "__main__":
    entry()
