"""`python -m dncompress` and the `dncompress` console script. Ctrl-C or SIGTERM while the modules load
(numpy, click, ...) leave at once with one line: nothing has been written yet, and a KeyboardInterrupt
raised inside an import would print a traceback. Once a command runs, cli.Group turns both signals into
exceptions so that temp files are removed."""
import os
import signal
import sys


def _leave(signum, frame):
    sys.stderr.write("interrupted; no partial output was written\n")
    sys.stderr.flush()
    os._exit(128 + signum)


def quiet_start_up() -> None:
    signal.signal(signal.SIGINT, _leave)
    signal.signal(signal.SIGTERM, _leave)


def run() -> None:
    quiet_start_up()
    from .cli import main
    main()


if __name__ == "__main__":
    run()
