import logging
import os
import sys

from .cli import main

status = main()
# Leave without the interpreter's teardown of torch's modules, 0.7 s of every command on a
# 2-core machine (and most of the wait after Ctrl-C): by now every file is closed and every
# process pool and Ray cluster the command started is stopped; only buffers remain to flush.
logging.shutdown()
sys.stdout.flush()
sys.stderr.flush()
os._exit(status)
