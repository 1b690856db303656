"""`python -m enclave_operator` is `enclave-operator`."""

import sys

from enclave_operator.cli import main

sys.exit(main())
