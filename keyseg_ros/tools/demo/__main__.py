"""`python -m keyseg_ros.tools.demo`: the live demo (as `ros2 run keyseg_ros demo`)."""

import sys

from keyseg_ros.tools.demo.main import main

sys.exit(main())
