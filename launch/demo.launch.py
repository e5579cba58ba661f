"""The keyseg demo on a ROS 2 install: keyseg_node answers reasoning queries about generated scenes.

    ros2 launch keyseg_ros demo.launch.py                       # the shipped KeySeg-Tiny
    ros2 launch keyseg_ros demo.launch.py model:=config:tiny queries:=3 out:=/tmp/demo

keyseg_node runs in the `keyseg` namespace, as in camera.launch.py. The demo driver
(`ros2 run keyseg_ros demo --attach`) plays one generated scene after another as the camera on
/keyseg/image, sends one query per scene through the query tool, collects /keyseg/result, mask and
keyword, prints the table and writes overlays, a contact sheet and summary.json/.csv into `out`.
When it is done the launch shuts down (keyseg_node included). Without a ROS install, `keyseg demo`
runs the same processes (docs/ros.md, "Demo").
"""

from __future__ import annotations

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import (
    DeclareLaunchArgument,
    EmitEvent,
    OpaqueFunction,
    RegisterEventHandler,
    SetEnvironmentVariable,
)
from launch.event_handlers import OnProcessExit
from launch.events import Shutdown
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

PACKAGE = "keyseg_ros"
# launch argument -> the demo driver's option
DEMO_OPTIONS = {"queries": "--queries", "rate": "--rate", "hold": "--hold", "out": "--out", "seed": "--seed",
                "timeout": "--timeout"}


def _arguments(share: str) -> list[DeclareLaunchArgument]:
    config = os.path.join(share, "config")
    return [
        DeclareLaunchArgument("model", default_value="",
                              description="checkpoint folder, hub id or config:<name>; empty: the params "
                                          "file's (keyseg_core's default, the shipped KeySeg-Tiny)"),
        DeclareLaunchArgument("device", default_value="",
                              description="cpu, cuda or cuda:N; empty: params file"),
        DeclareLaunchArgument("params_file", default_value=os.path.join(config, "keyseg.yaml"),
                              description="keyseg_node parameters (YAML)"),
        DeclareLaunchArgument("namespace", default_value="keyseg", description="namespace of keyseg_node"),
        DeclareLaunchArgument("queries", default_value="6",
                              description="queries to ask, one generated scene each (query types in turn)"),
        DeclareLaunchArgument("rate", default_value="10.0", description="camera frames per second"),
        DeclareLaunchArgument("hold", default_value="3",
                              description="answered frames to collect per query before the next"),
        DeclareLaunchArgument("out", default_value="out/demo",
                              description="output folder (overlays, contact sheet, summary, logs)"),
        DeclareLaunchArgument("seed", default_value="0", description="scene generator seed"),
        DeclareLaunchArgument("timeout", default_value="120.0",
                              description="longest wait, in seconds, for the node and for each "
                                          "query's answers"),
        DeclareLaunchArgument("fastdds_profile", default_value=os.path.join(config, "fastdds.xml"),
                              description="Fast DDS profile for every process started here; empty: keep "
                                          "the environment's"),
    ]


def _setup(context) -> list:
    """The node, the demo driver, and the shutdown when the driver is done."""
    arg = {name: LaunchConfiguration(name).perform(context) for name in (
        "model", "device", "params_file", "namespace", "fastdds_profile", *DEMO_OPTIONS)}
    actions = []
    if arg["fastdds_profile"]:
        actions += [SetEnvironmentVariable("FASTRTPS_DEFAULT_PROFILES_FILE", arg["fastdds_profile"]),
                    SetEnvironmentVariable("FASTDDS_DEFAULT_PROFILES_FILE", arg["fastdds_profile"])]
    overrides = {k: arg[k] for k in ("model", "device") if arg[k]}
    actions.append(Node(package=PACKAGE, executable="keyseg_node", name="keyseg_node", namespace=arg["namespace"],
                        parameters=[arg["params_file"], overrides], output="screen", emulate_tty=True))
    demo_args = ["--attach", "--namespace", "/" + arg["namespace"].strip("/")]
    for name, option in DEMO_OPTIONS.items():
        demo_args += [option, arg[name]]
    demo = Node(package=PACKAGE, executable="demo", name="keyseg_demo", arguments=demo_args,
                output="screen", emulate_tty=True)
    actions += [demo, RegisterEventHandler(OnProcessExit(
        target_action=demo, on_exit=[EmitEvent(event=Shutdown(reason="keyseg demo finished"))]))]
    return actions


def generate_launch_description() -> LaunchDescription:
    share = get_package_share_directory(PACKAGE)
    return LaunchDescription([*_arguments(share), OpaqueFunction(function=_setup)])
