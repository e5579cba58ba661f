"""`python -m keyseg_ros.node`: run keyseg_node (as `ros2 run keyseg_ros keyseg_node`)."""

import sys

from keyseg_ros.node.run import main

sys.exit(main())
