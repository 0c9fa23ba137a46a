"""Build script of the siam_tracker_ros ament_python package."""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = 'siam_tracker_ros'

setup(
    name=PACKAGE,
    version='0.1.0',
    packages=find_packages(exclude=['test']),
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + PACKAGE]),
        ('share/' + PACKAGE, ['package.xml']),
        ('share/' + PACKAGE + '/launch', glob('launch/*.launch.py')),
        ('share/' + PACKAGE + '/config', glob('config/*.yaml') + glob('config/*.xml')),
        ('share/' + PACKAGE + '/config/train', glob('config/train/*.yaml')),
        ('share/' + PACKAGE + '/rviz', glob('rviz/*.rviz')),
    ],
    # Supported ranges (README "Platforms"). The lower bounds are what the JetPack leg
    # (tools/jetpack_leg.sh, requirements-jetpack.txt) tests; requirements.txt pins the newest,
    # which `make test` tests. Also needed, not listed: onnxruntime >= 1.17 and OpenCV >= 4.8.
    # Each comes as several distributions (onnxruntime or onnxruntime-gpu; opencv-python,
    # -headless, -contrib; JetPack's OpenCV has no pip metadata at all), and naming one here
    # would make pip install it over the one the user chose.
    install_requires=['setuptools', 'numpy>=1.26', 'onnx>=1.16', 'PyYAML>=6.0'],
    extras_require={'plots': ['matplotlib>=3.5']},
    zip_safe=True,
    maintainer='siam_tracker_ros developers',
    maintainer_email='dev@siam-tracker-ros.invalid',
    description='Siamese single-object tracker for ROS 2 (NanoTrack, SiamRPN++).',
    license='Apache-2.0',
    entry_points={
        'console_scripts': [
            'siam-eval = siam_tracker_ros.cli.siam_eval:main',
            'siam-model = siam_tracker_ros.cli.siam_model:main',
            'siam-bench = siam_tracker_ros.cli.siam_bench:main',
            'siam-demo = siam_tracker_ros.cli.siam_demo:main',
            'siam-train = siam_tracker_ros.cli.siam_train:main',
            'siam-tracker-cli = siam_tracker_ros.cli.tracker_cli:main',
            'tracker_node = siam_tracker_ros.ros.tracker_node:main',
            'video_publisher = siam_tracker_ros.ros.video_publisher:main',
        ],
    },
)
