"""
Video publisher + tracker (+ RViz): ros2 launch siam_tracker_ros demo.launch.py video:=FILE.

Topics (relative, so ``namespace`` applies): camera/image_raw, camera/camera_info,
camera/ground_truth (with a ground-truth file: video_publisher's own names, no remapping) and
siam_tracker/{tracked,detections,...}.
With ``autostart:=true`` and a ground-truth file, the target is set from the first ground-truth
message (siam-tracker-cli set-target --from-gt); otherwise call ~/set_target yourself.
``dds_profile`` (default large_images) applies to every process started here, as in
tracker.launch.py.
"""
from launch import LaunchDescription
from launch.actions import (DeclareLaunchArgument, IncludeLaunchDescription, OpaqueFunction,
                            SetEnvironmentVariable)
from launch.conditions import IfCondition
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare
from siam_tracker_ros.tooling.dds_profile import ENV_VARS, profile_path

ARGUMENTS = (
    ('video', '', 'video file, image folder or sequence folder to publish'),
    ('groundtruth', '', 'ground-truth file (x,y,w,h per frame), published on '
     'camera/ground_truth'),
    ('rate', '0.0', "frames per second (0 = the video's own rate)"),
    ('loop', 'true', 'start the video again at its end'),
    ('lockstep', 'false', 'publish the next frame only after the tracker answered the last'),
    ('autostart', 'false', 'set the target from the first ground-truth message'),
    ('model', '', 'model directory or upstream NanoTrack folder'),
    ('backend', 'auto', 'auto | tensorrt | onnxruntime | torch'),
    ('device', 'cpu', 'cpu | cuda | cuda:N'),
    ('params_file', PathJoinSubstitution([FindPackageShare('siam_tracker_ros'), 'config',
                                          'tracker.yaml']), 'tracker parameters (YAML)'),
    ('namespace', '', 'namespace of all nodes'),
    ('rviz', 'false', 'start RViz with rviz/tracker.rviz'),
    ('use_sim_time', 'false', 'use /clock'),
    ('dds_profile', 'large_images', 'Fast DDS profile of the started processes: large_images '
     '(config/fastdds_large_images.xml), none (the environment as it is), or an XML file'),
)


def dds_profile_actions(context):
    """Return the environment actions of the dds_profile argument (no action for ``none``)."""
    path = profile_path(LaunchConfiguration('dds_profile').perform(context).strip() or 'none')
    return [] if path is None else [SetEnvironmentVariable(name, str(path)) for name in ENV_VARS]


def generate_launch_description():
    """Video publisher, tracker, optional auto set-target and RViz."""
    cfg = LaunchConfiguration
    args = [DeclareLaunchArgument(name, default_value=default, description=text)
            for name, default, text in ARGUMENTS]
    publisher = Node(
        package='siam_tracker_ros', executable='video_publisher', name='video_publisher',
        namespace=cfg('namespace'), output='screen', emulate_tty=True,
        parameters=[{'source': cfg('video'), 'groundtruth': cfg('groundtruth'),
                     'rate': cfg('rate'), 'loop': cfg('loop'), 'lockstep': cfg('lockstep'),
                     'wait_for_subscribers': 1, 'use_sim_time': cfg('use_sim_time')}])
    tracker = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(PathJoinSubstitution(
            [FindPackageShare('siam_tracker_ros'), 'launch', 'tracker.launch.py'])),
        launch_arguments={
            'image': 'camera/image_raw', 'camera_info': 'camera/camera_info',
            'params_file': cfg('params_file'), 'model': cfg('model'),
            'backend': cfg('backend'), 'device': cfg('device'),
            'namespace': cfg('namespace'), 'rviz': cfg('rviz'),
            'use_sim_time': cfg('use_sim_time'), 'dds_profile': cfg('dds_profile')}.items())
    autostart = Node(
        package='siam_tracker_ros', executable='siam-tracker-cli', name='set_target_once',
        namespace=cfg('namespace'), output='screen', condition=IfCondition(cfg('autostart')),
        arguments=['set-target', '--from-gt', 'camera/ground_truth', '--wait', '60'])
    # The profile first: the processes take their environment when they start.
    return LaunchDescription(args + [OpaqueFunction(function=dds_profile_actions), publisher,
                                     tracker, autostart])
