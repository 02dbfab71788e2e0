"""
Topic names and QoS profiles shared by every tgrpo_ros node.

Standard library plus ``rclpy.qos`` only (no torch), so that all nodes start
fast. Per-client topics are *relative* names: a sim bridge started in
namespace ``/sim0`` publishes ``/sim0/camera/image``; the policy server builds
the absolute names from its ``clients`` parameter with ``client_topic``.

QoS choices
-----------
* Images, instructions and actions: RELIABLE, VOLATILE, KEEP_LAST depth 2.
  These topics carry a request/reply handshake, not a sensor stream: a bridge
  publishes one image and then blocks until the matching action arrives, so
  a BEST_EFFORT drop would stall it until its action timeout. At most one
  request per client is outstanding, so depth 2 covers one re-publish after a
  timeout without letting stale frames queue up. An old image that is
  superseded is never answered: the server keeps only the newest per client.
* Episodes: RELIABLE, TRANSIENT_LOCAL. Every finished episode must reach the
  learner; TRANSIENT_LOCAL keeps each bridge's last episodes on its writer, so
  a learner that starts (or restarts) late still gets them. Subscribers
  (learner, recorders) use EPISODE_QOS, depth 64: one reader history is
  shared by all bridges (the topic has no keys), so it must hold every
  episode that can arrive while the learner is busy with an update. Bridges
  publish with depth BRIDGE_EPISODE_DEPTH (8, a sim_bridge parameter): a
  bridge runs one episode per assignment, so few are ever unread, and the
  writer history keeps whole episodes in memory (a 280-step episode is 42 MB
  of images). Subscribers must be TRANSIENT_LOCAL too: a VOLATILE reader
  gets no history.
* Assignments: RELIABLE, TRANSIENT_LOCAL, depth 1: a bridge that starts after
  the learner published its assignment still receives the current one, and
  only the newest assignment matters.
* Diagnostics (server batch sizes, bridge status, every node's ``~/status`` and
  ``/diagnostics``): RELIABLE, VOLATILE, depth 10.
* The policy server's stream mode (a real camera, docs/deploy.md): images
  BEST_EFFORT, VOLATILE, KEEP_LAST depth 1 (STREAM_IMAGE_QOS): the sensor-data
  reliability, which matches best-effort camera drivers and reliable
  publishers alike, with a history of one so that frames arriving during an
  inference never queue: the reader keeps only the newest. Instructions
  RELIABLE, TRANSIENT_LOCAL, depth 1 (LATCHED_INSTRUCTION_QOS): the operator
  publishes an instruction once, latched, and a server that starts later still
  gets it; the publisher must be transient-local too.
* Adapters over DDS and the server's answer: RELIABLE, TRANSIENT_LOCAL, depth 1:
  only the newest adapter matters, and a policy server that (re)starts later gets
  it from the learner's writer, so it comes back serving the current version.
"""

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from tgrpo_ros.names import normalize_namespace

# Per-client topics (relative: resolved inside each bridge's namespace).
CAMERA_TOPIC = 'camera/image'        # sensor_msgs/Image, rgb8 or bgr8, policy view
INSTRUCTION_TOPIC = 'instruction'    # std_msgs/String, the task's language instruction
ACTION_TOPIC = 'action'              # sensor_msgs/JointState, see messages.encode_action
ASSIGNMENT_TOPIC = 'assignment'      # std_msgs/String JSON, see messages.encode_assignment
BRIDGE_STATUS_TOPIC = 'bridge_status'  # std_msgs/String JSON, one line per bridge event

# Global topics.
EPISODE_TOPIC = '/tgrpo/episodes'    # std_msgs/UInt8MultiArray, see messages.encode_episode
SERVER_STATS_TOPIC = '/tgrpo/policy_server/stats'  # std_msgs/String JSON per batch
SERVER_ERRORS_TOPIC = '/tgrpo/policy_server/errors'  # std_msgs/String JSON per refused input
ADAPTER_TOPIC = '/tgrpo/adapter'     # std_msgs/UInt8MultiArray, see messages.encode_adapter
ADAPTER_STATUS_TOPIC = '/tgrpo/adapter_status'  # std_msgs/String JSON, the server's answer

# Every node's status, bad-input counters included (tgrpo_ros.nodes.diagnostics).
NODE_STATUS_TOPIC = '~/status'       # std_msgs/String JSON, once a second
DIAGNOSTICS_TOPIC = '/diagnostics'   # diagnostic_msgs/DiagnosticArray, the same content

# Default image frame (LIBERO's front camera).
CAMERA_FRAME_ID = 'agentview'

# Depths (messages). See the module docstring for the reasons.
IMAGE_DEPTH = 2
ACTION_DEPTH = 2
EPISODE_DEPTH = 64         # subscriber side (learner, recorders)
BRIDGE_EPISODE_DEPTH = 8   # publisher side (each sim bridge)
ASSIGNMENT_DEPTH = 1
DIAGNOSTICS_DEPTH = 10


def reliable_qos(depth, transient_local=False):
    """Return a reliable keep-last profile of ``depth`` (transient-local for late joiners)."""
    durability = (DurabilityPolicy.TRANSIENT_LOCAL if transient_local
                  else DurabilityPolicy.VOLATILE)
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=int(depth),
                      reliability=ReliabilityPolicy.RELIABLE, durability=durability)


IMAGE_QOS = reliable_qos(IMAGE_DEPTH)
INSTRUCTION_QOS = IMAGE_QOS
ACTION_QOS = reliable_qos(ACTION_DEPTH)
EPISODE_QOS = reliable_qos(EPISODE_DEPTH, transient_local=True)
ASSIGNMENT_QOS = reliable_qos(ASSIGNMENT_DEPTH, transient_local=True)
DIAGNOSTICS_QOS = reliable_qos(DIAGNOSTICS_DEPTH)
STREAM_IMAGE_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                              reliability=ReliabilityPolicy.BEST_EFFORT,
                              durability=DurabilityPolicy.VOLATILE)
LATCHED_INSTRUCTION_QOS = reliable_qos(1, transient_local=True)
ADAPTER_QOS = reliable_qos(1, transient_local=True)
ADAPTER_STATUS_QOS = reliable_qos(1, transient_local=True)


def client_topic(namespace, topic):
    """
    Return the absolute name of per-client ``topic`` for the client in ``namespace``.

    >>> client_topic('sim0', CAMERA_TOPIC)
    '/sim0/camera/image'
    """
    if topic.startswith('/'):
        raise ValueError(f"client topic '{topic}' must be relative (no leading '/')")
    return normalize_namespace(namespace) + '/' + topic
