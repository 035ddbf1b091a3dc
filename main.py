"""DatasetNeRF Studio entry point: `python main.py` opens the studio, `python main.py --help` the CLI."""
import os
import sys

# torch's OpenMP threads spin while they wait; beside other busy programs two spinning threads on
# two cores made an edit take 6-223 s instead of 4 (docs/editing.md). Waiting threads that sleep
# cost little on an idle machine. Set before torch is imported; the user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

if __name__ == "__main__":
    if len(sys.argv) > 1:
        from core.cli import main

        sys.exit(main(sys.argv[1:]))
    from app.studio import run

    sys.exit(run())
