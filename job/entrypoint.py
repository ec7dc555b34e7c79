"""spark-submit entry point: `spark-submit --py-files job.zip entrypoint.py ARGS`.

Shipped next to the zip (not inside it), because spark-submit needs a file to run; it only
imports the packaged job, so the zip stays the single source of the code that runs.
"""

import sys

from job.__main__ import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
