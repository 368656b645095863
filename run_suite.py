#!/usr/bin/env python
"""cl_asr entry point: `python run_suite.py --help`."""
import sys

from cl_asr.cli import main

if __name__ == "__main__":
    sys.exit(main())
