"""camera.launch.py, the params YAML and the RViz layout, checked without the `launch` package.

`launch`/`launch_ros` are not installable from PyPI, so the launch file runs here against small
recording stand-ins of the launch API: that checks its arguments, the nodes it would start (package,
executable, parameters, remappings, conditions) and that every file and executable it names is
installed. The recorded nodes are then started as real processes, the way `ros2 launch` would
start them, and must produce a mask. What only a real ROS install checks: `ros2 launch` itself
(substitution and condition evaluation by launch, RViz loading keyseg.rviz, camera drivers).
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import pytest

pytest.importorskip("rclpy", reason="rclpy (ROS 2) is not importable: install ROS 2 or the [ros] extra")

import numpy as np  # noqa: E402
import ros_harness as h  # noqa: E402
import yaml  # noqa: E402


class Recorded:
    """Stand-in for a launch action: remembers how it was constructed."""

    def __init__(self, *args, **kwargs) -> None:
        self.args, self.kwargs = args, kwargs


class LaunchConfiguration(Recorded):
    def perform(self, context) -> str:
        return context.launch_configurations[self.args[0]]


class Context:
    def __init__(self, values: dict[str, str]) -> None:
        self.launch_configurations = values


@pytest.fixture
def launch_file(monkeypatch, ros_install):
    """The installed camera.launch.py, imported against recording stand-ins of launch/launch_ros."""
    stubs = {
        "launch": {"LaunchDescription": Recorded},
        "launch.actions": {n: Recorded for n in ("DeclareLaunchArgument", "OpaqueFunction",
                                                 "SetEnvironmentVariable")},
        "launch.conditions": {"IfCondition": Recorded},
        "launch.substitutions": {"LaunchConfiguration": LaunchConfiguration},
        "launch_ros": {}, "launch_ros.actions": {"Node": Recorded},
    }
    for name, attrs in stubs.items():
        module = types.ModuleType(name)
        module.__dict__.update(attrs)
        monkeypatch.setitem(sys.modules, name, module)
    path = ros_install / "share" / "keyseg_ros" / "launch" / "camera.launch.py"
    spec = importlib.util.spec_from_file_location("camera_launch", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _describe(launch_file, **overrides):
    """(declared arguments by name, actions from the opaque setup)."""
    description = launch_file.generate_launch_description()
    entities = description.args[0]
    arguments = {e.args[0]: e.kwargs for e in entities if "default_value" in e.kwargs}
    values = {name: kw["default_value"] for name, kw in arguments.items()} | overrides
    opaque = next(e for e in entities if "function" in e.kwargs)
    return arguments, opaque.kwargs["function"](Context(values))


def _nodes(actions) -> dict[str, Recorded]:
    return {a.kwargs["executable"]: a for a in actions if "executable" in a.kwargs}


def test_arguments_are_declared_with_descriptions(launch_file):
    arguments, _ = _describe(launch_file)
    assert {"model", "backend", "device", "params_file", "namespace", "image_topic", "query_topic",
            "compressed", "camera", "images", "rviz", "rviz_config", "fastdds_profile", "depth_topic",
            "camera_info_topic", "target_frame", "camera_frame", "use_sim_time", "log_level",
            "depth_images", "intrinsics"} <= set(arguments)
    for name, kw in arguments.items():
        assert kw.get("description"), f"launch argument {name} has no description"
        if "choices" in kw:
            assert kw["default_value"] in kw["choices"], name
    for name in ("params_file", "rviz_config"):
        assert Path(arguments[name]["default_value"]).is_file(), name


def test_default_launch_starts_keyseg_node_from_the_params_file(launch_file, ros_install):
    _, actions = _describe(launch_file)
    nodes = _nodes(actions)
    assert set(nodes) == {"keyseg_node"}  # no RViz unless asked: a headless robot has none
    node = nodes["keyseg_node"].kwargs
    assert (node["package"], node["namespace"], node["name"]) == ("keyseg_ros", "keyseg", "keyseg_node")
    params_file, overrides = node["parameters"]
    assert Path(params_file).is_file() and overrides == {"compressed_input": False, "use_sim_time": False}
    assert {("image", "/camera/image_raw"), ("depth", "/camera/depth/image_raw"),
            ("camera_info", "/camera/camera_info")} <= set(node["remappings"])
    assert node["ros_arguments"] == ["--log-level", "info"]
    assert Path(h.executable("keyseg_node")).is_file()
    # The loopback-only Fast DDS profile is not forced: a remote RViz must see the node.
    assert not [a for a in actions if a.args and "PROFILES_FILE" in str(a.args[0])]


def test_fastdds_profile_sim_time_and_log_level_reach_every_process(launch_file, tmp_path, ros_install):
    profile = str(ros_install / "share" / "keyseg_ros" / "config" / "fastdds.xml")
    _, actions = _describe(launch_file, fastdds_profile=profile, use_sim_time="true", log_level="debug",
                           images=str(tmp_path), target_frame="base_link")
    env = {a.args for a in actions if a.args and "PROFILES_FILE" in str(a.args[0])}
    assert env == {("FASTRTPS_DEFAULT_PROFILES_FILE", profile), ("FASTDDS_DEFAULT_PROFILES_FILE", profile)}
    nodes = _nodes(actions)
    assert nodes["keyseg_node"].kwargs["parameters"][1]["use_sim_time"] is True
    assert nodes["keyseg_node"].kwargs["parameters"][1]["target_frame"] == "base_link"
    assert nodes["image_player"].kwargs["parameters"] == [{"use_sim_time": True}]
    assert all(n.kwargs["ros_arguments"] == ["--log-level", "debug"] for n in nodes.values())


def test_rviz_layout_follows_the_namespace_and_the_camera_frame(launch_file):
    for overrides, prefix, frame in (({}, "/keyseg/", "camera_optical_frame"),
                                     ({"namespace": "robot1/keyseg", "camera_frame": "head_camera_optical_frame"},
                                      "/robot1/keyseg/", "head_camera_optical_frame"),
                                     ({"target_frame": "map"}, "/keyseg/", "map")):
        _, actions = _describe(launch_file, rviz="true", **overrides)
        rviz = _nodes(actions)["rviz2"].kwargs
        layout = yaml.safe_load(Path(rviz["arguments"][1]).read_text())
        topics = {d["Topic"]["Value"] for d in layout["Visualization Manager"]["Displays"]}
        assert topics == {prefix + t for t in ("overlay", "mask", "target_cloud", "target_point")}
        assert layout["Visualization Manager"]["Global Options"]["Fixed Frame"] == frame


def test_arguments_override_parameters_and_start_the_image_player(launch_file, tmp_path):
    _, actions = _describe(launch_file, model="config:tiny", device="cuda:1", images=str(tmp_path),
                           query_topic="/voice/text", compressed="true", depth_images=str(tmp_path),
                           intrinsics="300,300,160,120")
    nodes = _nodes(actions)
    node = nodes["keyseg_node"].kwargs
    assert node["parameters"][1] == {"model": "config:tiny", "device": "cuda:1", "compressed_input": True,
                                     "use_sim_time": False}
    assert ("query", "/voice/text") in node["remappings"]
    assert ("image/compressed", "/camera/image_raw/compressed") in node["remappings"]
    player = nodes["image_player"].kwargs["arguments"]
    assert player[:3] == [str(tmp_path), "--topic", "/camera/image_raw"]
    assert "--compressed" in player and Path(h.executable("image_player")).is_file()
    start = player.index("--depth")
    assert player[start:start + 4] == ["--depth", str(tmp_path), "--depth-topic", "/camera/depth/image_raw"]
    assert player[player.index("--intrinsics") + 1] == "300,300,160,120"
    assert player[player.index("--frame-id") + 1] == "camera_optical_frame"


def test_a_camera_driver_that_is_not_installed_is_a_clear_error(launch_file):
    with pytest.raises(RuntimeError, match="v4l2_camera package is not installed"):
        _describe(launch_file, camera="v4l2_camera")


def test_params_yaml_sets_exactly_the_node_parameters(ros_install):
    from keyseg_ros.node.params import PARAMS, validation_error

    config = yaml.safe_load((ros_install / "share" / "keyseg_ros" / "config" / "keyseg.yaml").read_text())
    params = config["/**/keyseg_node"]["ros__parameters"]
    # Testing-only parameters (slow or failing frames on purpose) stay out of the user's YAML.
    user_params = [p for p in PARAMS if not p.testing]
    assert set(params) == {p.name for p in user_params}
    for spec in user_params:
        assert type(params[spec.name]) is type(spec.default), spec.name
        assert params[spec.name] == spec.default, spec.name
        assert validation_error(spec.name, params[spec.name]) is None


def test_rviz_layout_shows_overlay_mask_and_the_target_in_3d(ros_install):
    layout = yaml.safe_load((ros_install / "share" / "keyseg_ros" / "config" / "keyseg.rviz").read_text())
    displays = {d["Topic"]["Value"]: d["Class"] for d in layout["Visualization Manager"]["Displays"]}
    assert displays == {"/keyseg/overlay": "rviz_default_plugins/Image", "/keyseg/mask": "rviz_default_plugins/Image",
                        "/keyseg/target_cloud": "rviz_default_plugins/PointCloud2",
                        "/keyseg/target_point": "rviz_default_plugins/PointStamped"}


def _command(node: Recorded, namespace: str, topic_prefix: str) -> tuple[str, list[str]]:
    """The command line `ros2 launch` would run for a recorded Node (topics moved under a
    test-only prefix so parallel tests do not meet)."""
    kw = node.kwargs
    args = [str(a) for a in kw.get("arguments", [])]
    args = [topic_prefix + a if a.startswith("/camera") else a for a in args]
    ros_args = ["--ros-args", *kw.get("ros_arguments", []), "-r", f"__node:={kw['name']}"]
    if "namespace" in kw:
        ros_args += ["-r", f"__ns:={namespace}"]
    for param in kw.get("parameters", []):
        if isinstance(param, dict):
            ros_args += [a for k, v in param.items() for a in ("-p", f"{k}:={str(v).lower()}")]
        else:
            ros_args += ["--params-file", param]
    for src, dst in kw.get("remappings", []):
        ros_args += ["-r", f"{src}:={topic_prefix + dst if dst.startswith('/') else dst}"]
    return kw["executable"], args + ros_args


def test_launched_processes_answer_a_query_from_the_query_tool(launch_file, probe, workdir, tmp_path):
    from PIL import Image as PILImage
    from sensor_msgs.msg import Image

    pictures = tmp_path / "pictures"
    pictures.mkdir()
    for i in range(3):
        PILImage.fromarray(np.full((120, 160, 3), 60 * i, np.uint8)).save(pictures / f"{i}.png")
    _, actions = _describe(launch_file, model="config:tiny", images=str(pictures), rate="20")
    ns, prefix = h.unique_namespace(), h.unique_namespace()
    masks = probe.collect(Image, f"{ns}/mask")
    procs = [h.Process.start(*_command(node, ns, prefix), workdir) for node in _nodes(actions).values()]
    try:
        query = h.Process.start("query", ["the brightest picture", "--namespace", ns, "--wait", "60"], workdir)
        assert query.wait(90) == 0, query.output()
        h.wait_until(lambda: bool(masks.msgs), 30, "a mask from the launched node", procs[0])
        assert (masks.msgs[0].width, masks.msgs[0].height) == (160, 120)
    finally:
        for proc in procs:
            proc.assert_clean_stop()
