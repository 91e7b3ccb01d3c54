import sys

from followup_admin.cli import main

sys.exit(main())
