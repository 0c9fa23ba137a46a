"""
Start the siam_tracker node on a camera: ros2 launch siam_tracker_ros tracker.launch.py.

``dds_profile`` (default large_images) points Fast DDS at config/fastdds_large_images.xml in
every process this launch starts (FASTRTPS_DEFAULT_PROFILES_FILE, FASTDDS_DEFAULT_PROFILES_FILE):
shared memory sized for 720p/1080p frames beside UDP. ``none`` leaves the environment as it is;
a path names another XML file.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare
from siam_tracker_ros.tooling.dds_profile import ENV_VARS, profile_path

ARGUMENTS = (
    ('image', '/camera/image_raw', 'image topic (sensor_msgs/Image, or CompressedImage with '
     'image_transport:=compressed)'),
    ('camera_info', '/camera/camera_info', 'camera_info topic (bearing angles)'),
    ('params_file', PathJoinSubstitution([FindPackageShare('siam_tracker_ros'), 'config',
                                          'tracker.yaml']), 'node parameters (YAML)'),
    ('model', '', 'model directory or upstream NanoTrack folder (overrides model_path of '
     'params_file when not empty)'),
    ('backend', 'auto', 'auto | tensorrt | onnxruntime | torch'),
    ('device', 'cpu', 'cpu | cuda | cuda:N'),
    ('image_transport', 'raw', 'raw | compressed'),
    ('qos_reliability', 'best_effort', 'image subscription reliability: best_effort | '
     'reliable'),
    ('namespace', '', 'namespace of the node (topics become /NS/siam_tracker/...)'),
    ('node_name', 'siam_tracker', 'name of the tracker node'),
    ('rviz', 'false', 'start RViz with rviz/tracker.rviz'),
    ('use_sim_time', 'false', 'use /clock'),
    ('dds_profile', 'large_images', 'Fast DDS profile of the started processes: large_images '
     '(config/fastdds_large_images.xml: shared memory for 720p/1080p images from a local '
     'camera), none (the environment as it is), or the path of an XML file'),
)


def dds_profile_actions(context):
    """Return the environment actions of the dds_profile argument (no action for ``none``)."""
    path = profile_path(LaunchConfiguration('dds_profile').perform(context).strip() or 'none')
    return [] if path is None else [SetEnvironmentVariable(name, str(path)) for name in ENV_VARS]


def _model_override(context):
    model = LaunchConfiguration('model').perform(context)
    return [{'model_path': model}] if model else []


def _tracker_node(context):
    params = [LaunchConfiguration('params_file'),
              {'use_sim_time': LaunchConfiguration('use_sim_time'),
               'backend': LaunchConfiguration('backend'),
               'device': LaunchConfiguration('device'),
               'image_transport': LaunchConfiguration('image_transport'),
               'qos_reliability': LaunchConfiguration('qos_reliability')}]
    params += _model_override(context)
    return [Node(
        package='siam_tracker_ros', executable='tracker_node',
        name=LaunchConfiguration('node_name'), namespace=LaunchConfiguration('namespace'),
        parameters=params, output='screen', emulate_tty=True,
        remappings=[('image', LaunchConfiguration('image')),
                    ('camera_info', LaunchConfiguration('camera_info'))])]


def generate_launch_description():
    """Tracker node (+ optional RViz)."""
    args = [DeclareLaunchArgument(name, default_value=default, description=text)
            for name, default, text in ARGUMENTS]
    rviz = Node(
        package='rviz2', executable='rviz2', name='rviz2', namespace=LaunchConfiguration(
            'namespace'), output='screen', condition=IfCondition(LaunchConfiguration('rviz')),
        arguments=['-d', PathJoinSubstitution([FindPackageShare('siam_tracker_ros'), 'rviz',
                                               'tracker.rviz'])],
        parameters=[{'use_sim_time': LaunchConfiguration('use_sim_time')}])
    # The profile first: the processes take their environment when they start.
    return LaunchDescription(args + [OpaqueFunction(function=dds_profile_actions),
                                     OpaqueFunction(function=_tracker_node), rviz])
