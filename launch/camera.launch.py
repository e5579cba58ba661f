"""Camera -> keyseg_node -> RViz, on one screen.

    ros2 launch keyseg_ros camera.launch.py model:=<checkpoint or hub id> rviz:=true
    ros2 launch keyseg_ros camera.launch.py images:=~/pictures           # no camera: play a folder
    ros2 launch keyseg_ros camera.launch.py camera:=v4l2_camera          # start a USB camera driver
    ros2 launch keyseg_ros camera.launch.py depth_topic:=/camera/aligned_depth_to_color/image_raw \
        camera_info_topic:=/camera/color/camera_info target_frame:=base_link  # an RGB-D camera
then send a query:  ros2 run keyseg_ros query "the cup I can drink from"

keyseg_node runs in the `keyseg` namespace: /keyseg/mask, /keyseg/detections, /keyseg/target_point,
... Empty model/backend/device arguments keep the values of the params file. The Fast DDS profile
(config/fastdds.xml: large images on one host, loopback only) is applied only when asked for with
fastdds_profile:=<file>, so a remote RViz can see the node.
"""

from __future__ import annotations

import os
import tempfile

from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

PACKAGE = "keyseg_ros"
LOG_LEVELS = ("debug", "info", "warn", "error", "fatal")
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
        DeclareLaunchArgument("depth_topic", default_value="/camera/depth/image_raw",
                              description="depth registered to the image (16UC1 mm or 32FC1 m)"),
        DeclareLaunchArgument("camera_info_topic", default_value="/camera/camera_info",
                              description="camera_info of the image (its K back-projects the depth)"),
        DeclareLaunchArgument("target_frame", default_value="",
                              description="tf2 frame for target_point, target_cloud and detections_3d; "
                                          "empty: the params file's (the camera's optical frame)"),
        DeclareLaunchArgument("camera_frame", default_value="camera_optical_frame",
                              description="the camera's frame: RViz's fixed frame (unless target_frame "
                                          "is set) and the image player's frame_id"),
        DeclareLaunchArgument("use_sim_time", default_value="false", choices=["true", "false"],
                              description="use /clock (bag replay, simulation) for every node started here"),
        DeclareLaunchArgument("log_level", default_value="info", choices=list(LOG_LEVELS),
                              description="log level of every node started here"),
        DeclareLaunchArgument("query_topic", default_value="",
                              description="query topic (std_msgs/String); empty: <namespace>/query"),
        DeclareLaunchArgument("compressed", default_value="false", choices=["true", "false"],
                              description="subscribe to <image_topic>/compressed instead"),
        DeclareLaunchArgument("camera", default_value="none", choices=list(CAMERAS),
                              description="camera to start; drivers must be installed"),
        DeclareLaunchArgument("images", default_value="",
                              description="folder, image or video to play as the camera (image_player)"),
        DeclareLaunchArgument("depth_images", default_value="",
                              description="image_player: depth images registered to `images` (folder or file)"),
        DeclareLaunchArgument("intrinsics", default_value="",
                              description="image_player: FX,FY,CX,CY of a camera_info to publish"),
        DeclareLaunchArgument("rate", default_value="10.0", description="image_player frames per second"),
        DeclareLaunchArgument("rviz", default_value="false", choices=["true", "false"],
                              description="start RViz with the overlay and mask displays"),
        DeclareLaunchArgument("rviz_config", default_value=os.path.join(config, "keyseg.rviz"),
                              description="RViz configuration; its /keyseg/ topics are moved to the "
                                          "namespace and its fixed frame set to the camera's"),
        DeclareLaunchArgument("fastdds_profile", default_value="",
                              description="Fast DDS profile for every process started here, e.g. the "
                                          "package's config/fastdds.xml (camera-sized images on one host, "
                                          "loopback only: no remote RViz); empty: keep the environment's"),
    ]


def rviz_config(template: str, namespace: str, fixed_frame: str) -> str:
    """A copy of the RViz layout for this launch: topics under the namespace, the given fixed frame."""
    with open(template, encoding="utf-8") as f:
        text = f.read()
    prefix = "/" + namespace.strip("/") + "/" if namespace.strip("/") else "/"
    text = text.replace("/keyseg/", prefix).replace("Fixed Frame: camera_optical_frame",
                                                     f"Fixed Frame: {fixed_frame}")
    out = tempfile.NamedTemporaryFile("w", suffix=".rviz", prefix="keyseg_", delete=False, encoding="utf-8")
    with out:
        out.write(text)
    return out.name


def _setup(context) -> list:
    """Actions that depend on argument values (empty overrides, camera choice)."""
    arg = {name: LaunchConfiguration(name).perform(context) for name in (
        "model", "backend", "device", "params_file", "namespace", "image_topic", "query_topic",
        "compressed", "camera", "images", "rate", "fastdds_profile", "depth_topic", "camera_info_topic",
        "target_frame", "camera_frame", "use_sim_time", "log_level", "depth_images", "intrinsics",
        "rviz", "rviz_config")}
    actions = []
    if arg["fastdds_profile"]:
        actions += [SetEnvironmentVariable("FASTRTPS_DEFAULT_PROFILES_FILE", arg["fastdds_profile"]),
                    SetEnvironmentVariable("FASTDDS_DEFAULT_PROFILES_FILE", arg["fastdds_profile"])]

    sim_time = {"use_sim_time": arg["use_sim_time"] == "true"}
    ros_arguments = ["--log-level", arg["log_level"]]
    overrides = {k: arg[k] for k in ("model", "backend", "device", "target_frame") if arg[k]}
    overrides["compressed_input"] = arg["compressed"] == "true"
    overrides.update(sim_time)
    remappings = [("image", arg["image_topic"]), ("image/compressed", arg["image_topic"] + "/compressed"),
                  ("depth", arg["depth_topic"]), ("camera_info", arg["camera_info_topic"])]
    if arg["query_topic"]:
        remappings.append(("query", arg["query_topic"]))
    actions.append(Node(package=PACKAGE, executable="keyseg_node", name="keyseg_node", namespace=arg["namespace"],
                        parameters=[arg["params_file"], overrides], remappings=remappings,
                        ros_arguments=ros_arguments, output="screen", emulate_tty=True))

    camera = "image_player" if arg["images"] else arg["camera"]
    if camera == "image_player":
        if not arg["images"]:
            raise RuntimeError("camera:=image_player needs images:=<folder, image or video>")
        player = [arg["images"], "--topic", arg["image_topic"], "--rate", arg["rate"], "--loop",
                  "--frame-id", arg["camera_frame"]]
        player += ["--compressed"] if arg["compressed"] == "true" else []
        player += ["--depth", arg["depth_images"], "--depth-topic", arg["depth_topic"]] if arg["depth_images"] else []
        player += ["--intrinsics", arg["intrinsics"], "--info-topic", arg["camera_info_topic"]] \
            if arg["intrinsics"] else []
        actions.append(Node(package=PACKAGE, executable="image_player", name="image_player", arguments=player,
                            parameters=[sim_time], ros_arguments=ros_arguments, output="screen"))
    elif camera in DRIVERS:
        try:
            get_package_share_directory(camera)
        except PackageNotFoundError:
            raise RuntimeError(f"camera:={camera} but the {camera} package is not installed "
                               f"(sudo apt install ros-$ROS_DISTRO-{camera.replace('_', '-')})") from None
        executable, topic = DRIVERS[camera]
        actions.append(Node(package=camera, executable=executable, name="camera", parameters=[sim_time],
                            remappings=[(topic, arg["image_topic"])], output="screen"))
    if arg["rviz"] == "true":
        fixed_frame = arg["target_frame"] or arg["camera_frame"]
        actions.append(Node(package="rviz2", executable="rviz2", name="rviz2", output="screen",
                            parameters=[sim_time],
                            arguments=["-d", rviz_config(arg["rviz_config"], arg["namespace"], fixed_frame)]))
    return actions


def generate_launch_description() -> LaunchDescription:
    share = get_package_share_directory(PACKAGE)
    return LaunchDescription([*_arguments(share), OpaqueFunction(function=_setup)])
