import sys

from hdp_client.cli import main

sys.exit(main())
