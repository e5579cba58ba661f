"""Camera -> keyseg_node -> RViz, on one screen.

    ros2 launch keyseg_ros camera.launch.py model:=<checkpoint or hub id> rviz:=true
    ros2 launch keyseg_ros camera.launch.py images:=~/pictures           # no camera: play a folder
    ros2 launch keyseg_ros camera.launch.py camera:=v4l2_camera          # start a USB camera driver
then send a query:  ros2 run keyseg_ros query "the cup I can drink from"

keyseg_node runs in the `keyseg` namespace: /keyseg/mask, /keyseg/result, /keyseg/overlay, ...
Empty model/backend/device arguments keep the values of the params file.
"""

from __future__ import annotations

import os

from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

PACKAGE = "keyseg_ros"
CAMERAS = ("none", "image_player", "v4l2_camera", "usb_cam")
# Camera drivers this file knows how to start: package -> (executable, image topic it publishes).
DRIVERS = {"v4l2_camera": ("v4l2_camera_node", "image_raw"), "usb_cam": ("usb_cam_node_exe", "image_raw")}


def _arguments(share: str) -> list[DeclareLaunchArgument]:
    config = os.path.join(share, "config")
    return [
        DeclareLaunchArgument("model", default_value="",
                              description="checkpoint folder, hub id or config:<name>; empty: params file"),
        DeclareLaunchArgument("backend", default_value="", choices=["", "torch", "compile", "onnxruntime", "tensorrt", "auto"],
                              description="inference backend; empty: params file"),
        DeclareLaunchArgument("device", default_value="", description="cpu, cuda or cuda:N; empty: params file"),
        DeclareLaunchArgument("params_file", default_value=os.path.join(config, "keyseg.yaml"),
                              description="keyseg_node parameters (YAML)"),
        DeclareLaunchArgument("namespace", default_value="keyseg", description="namespace of keyseg_node"),
        DeclareLaunchArgument("image_topic", default_value="/camera/image_raw",
                              description="camera image topic (sensor_msgs/Image)"),
        DeclareLaunchArgument("query_topic", default_value="",
                              description="query topic (std_msgs/String); empty: <namespace>/query"),
        DeclareLaunchArgument("compressed", default_value="false", choices=["true", "false"],
                              description="subscribe to <image_topic>/compressed instead"),
        DeclareLaunchArgument("camera", default_value="none", choices=list(CAMERAS),
                              description="camera to start; drivers must be installed"),
        DeclareLaunchArgument("images", default_value="",
                              description="folder, image or video to play as the camera (image_player)"),
        DeclareLaunchArgument("rate", default_value="10.0", description="image_player frames per second"),
        DeclareLaunchArgument("rviz", default_value="false", choices=["true", "false"],
                              description="start RViz with the overlay and mask displays"),
        DeclareLaunchArgument("rviz_config", default_value=os.path.join(config, "keyseg.rviz"),
                              description="RViz configuration"),
        DeclareLaunchArgument("fastdds_profile", default_value=os.path.join(config, "fastdds.xml"),
                              description="Fast DDS profile for every process started here (lets "
                                          "camera-sized images through on one host); empty: keep "
                                          "the environment's"),
    ]


def _setup(context) -> list:
    """Actions that depend on argument values (empty overrides, camera choice)."""
    arg = {name: LaunchConfiguration(name).perform(context) for name in (
        "model", "backend", "device", "params_file", "namespace", "image_topic", "query_topic",
        "compressed", "camera", "images", "rate", "fastdds_profile")}
    actions = []
    if arg["fastdds_profile"]:
        actions += [SetEnvironmentVariable("FASTRTPS_DEFAULT_PROFILES_FILE", arg["fastdds_profile"]),
                    SetEnvironmentVariable("FASTDDS_DEFAULT_PROFILES_FILE", arg["fastdds_profile"])]

    overrides = {k: arg[k] for k in ("model", "backend", "device") if arg[k]}
    overrides["compressed_input"] = arg["compressed"] == "true"
    remappings = [("image", arg["image_topic"]), ("image/compressed", arg["image_topic"] + "/compressed")]
    if arg["query_topic"]:
        remappings.append(("query", arg["query_topic"]))
    actions.append(Node(package=PACKAGE, executable="keyseg_node", name="keyseg_node", namespace=arg["namespace"],
                        parameters=[arg["params_file"], overrides], remappings=remappings,
                        output="screen", emulate_tty=True))

    camera = "image_player" if arg["images"] else arg["camera"]
    if camera == "image_player":
        if not arg["images"]:
            raise RuntimeError("camera:=image_player needs images:=<folder, image or video>")
        actions.append(Node(package=PACKAGE, executable="image_player", name="image_player",
                            arguments=[arg["images"], "--topic", arg["image_topic"], "--rate", arg["rate"],
                                       "--loop"] + (["--compressed"] if arg["compressed"] == "true" else []),
                            output="screen"))
    elif camera in DRIVERS:
        try:
            get_package_share_directory(camera)
        except PackageNotFoundError:
            raise RuntimeError(f"camera:={camera} but the {camera} package is not installed "
                               f"(sudo apt install ros-$ROS_DISTRO-{camera.replace('_', '-')})") from None
        executable, topic = DRIVERS[camera]
        actions.append(Node(package=camera, executable=executable, name="camera",
                            remappings=[(topic, arg["image_topic"])], output="screen"))
    return actions


def generate_launch_description() -> LaunchDescription:
    share = get_package_share_directory(PACKAGE)
    return LaunchDescription([
        *_arguments(share),
        OpaqueFunction(function=_setup),
        Node(package="rviz2", executable="rviz2", name="rviz2", output="screen",
             arguments=["-d", LaunchConfiguration("rviz_config")],
             condition=IfCondition(LaunchConfiguration("rviz"))),
    ])
