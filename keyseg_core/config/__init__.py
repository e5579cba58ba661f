"""Configuration as data: validated dataclasses, built from mappings, read from files.

  schema    help_field, build_dataclass, check_type: the machinery every config class uses
  model     KeySegConfig and its sections (what a checkpoint's config.json holds)
  presets   named rows of a section's switches (fusion.preset, loss.preset)
  files     YAML/JSON files, `base:` layering and `--set` overrides
  labels    the "leave this out" label values (tokens: -100, mask pixels: 255)
  default_keywords  COCO's 80 names, the keyword candidates when a model names none

Training configs (train/stage1/config.py, train/stage2/config.py, train/optim.py) use the same
schema and files; the ROS node's parameters are declared in keyseg_ros/node/params.py.
"""
