"""
Talk to ROS 2 nodes from a test: a private rclpy context with waiting helpers.

Used by the integration tests (the ``ros_client`` fixture in
``test/conftest.py``) and by ``bench/rollout.py``. Nodes themselves run as
real processes through ``tgrpo_ros.orchestration.processes``.
"""

import os
import time

# s: the shortest deadline of any wait for an event. A deadline is there to end a hang,
# never to judge speed: a test on a loaded machine (docs/testing.md, make test-loaded)
# waits as long as a hang would take to show, whatever shorter deadline it names.
MIN_EVENT_TIMEOUT = float(os.environ.get('TGRPO_MIN_EVENT_TIMEOUT', '120'))


class RosClient:
    """A test-side rclpy node in its own context, with helpers that wait for DDS."""

    def __init__(self, name):
        """Initialise a private rclpy context and create node ``name`` in it."""
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        self._rclpy = rclpy
        self.context = rclpy.context.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)

    def spin_for(self, duration):  # seconds
        """Process callbacks for ``duration`` seconds."""
        deadline = time.monotonic() + duration
        while time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=min(0.05, max(0.0, deadline - time.monotonic())))

    def spin_until(self, predicate, timeout, what='condition'):  # seconds
        """
        Process callbacks until ``predicate()`` is true; raise TimeoutError naming ``what``.

        The deadline is ``timeout`` s, at least MIN_EVENT_TIMEOUT: only a hang reaches it.
        """
        timeout = max(timeout, MIN_EVENT_TIMEOUT)
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError(f'timed out after {timeout:.1f} s waiting for {what}')
            self.executor.spin_once(timeout_sec=0.05)

    def publish_until(self, publish, predicate, timeout, what, period=2.0):  # seconds
        """
        Call ``publish()`` now and every ``period`` seconds until ``predicate()`` is true.

        Discovery is not symmetric: this side can see a match before the remote
        node has matched it back, and a volatile message sent in that window is
        dropped by the remote reader. A request that must get through is
        therefore repeated until its answer arrives; repeats carry the same
        content, so the answer is the same.
        """
        publish()
        last_sent = [time.monotonic()]

        def answered_or_send_again():
            if predicate():
                return True
            if time.monotonic() - last_sent[0] >= period:
                publish()
                last_sent[0] = time.monotonic()
            return False
        self.spin_until(answered_or_send_again, timeout, what)

    def wait_for_subscribers(self, publisher, count=1, timeout=20.0):
        """Wait until ``publisher`` is matched by ``count`` subscriptions (discovery done)."""
        self.spin_until(lambda: publisher.get_subscription_count() >= count, timeout,
                        f'{count} subscriber(s) on {publisher.topic_name}')

    def wait_for_publishers(self, subscription, count=1, timeout=20.0):
        """Wait until ``subscription`` is matched by ``count`` publishers."""
        self.spin_until(lambda: subscription.get_publisher_count() >= count, timeout,
                        f'{count} publisher(s) on {subscription.topic_name}')

    def wait_for_service(self, client, timeout=20.0):
        """Wait until the server behind ``client`` is available."""
        self.spin_until(client.service_is_ready, timeout, f'service {client.srv_name}')

    def call(self, client, request, timeout=20.0, resend_every=None):
        """
        Call a service and return its response, spinning this client meanwhile.

        ``resend_every``: a query is sent again that often until it is answered
        (``tgrpo_ros.nodes.services``: Fast DDS can drop a response to a client that
        the server has not matched yet).
        """
        from tgrpo_ros.nodes.services import call_service

        self.wait_for_service(client, timeout)
        timeout = max(timeout, MIN_EVENT_TIMEOUT)
        response = call_service(client, request,
                                lambda seconds: self.executor.spin_once(timeout_sec=seconds),
                                timeout, resend_every)
        if response is None:
            raise TimeoutError(f'timed out after {timeout:.1f} s waiting for response from '
                               f'{client.srv_name}')
        return response

    def close(self):
        """Destroy the node and shut the context down."""
        self.executor.shutdown()
        self.node.destroy_node()
        if self.context.ok():
            self._rclpy.shutdown(context=self.context)


def send_until_counted(client, variants, publish, bad_count, timeout=120.0, period=5.0):
    """
    Publish each (what, msg) of ``variants`` until the node has counted it; return how many.

    ``bad_count()`` reads the node's bad-input counter (from its ``~/status``). A
    variant is published again every ``period`` s until the counter has grown by one
    (a depth-1 reader keeps only the newest message, and discovery can drop the
    first), so the counter may end above the number sent, never below.
    """
    sent = 0
    for what, msg in variants:
        target = bad_count() + 1
        client.publish_until(lambda: publish(msg), lambda: bad_count() >= target, timeout,
                             f'{what} counted as bad input', period=period)
        sent += 1
    return sent


def request_action(client, namespace, image, instruction, stamp_ns, timeout=60.0):
    """
    Ask the policy server serving ``namespace`` for one action, as a bridge would.

    Publishes ``instruction`` and ``image`` (uint8 [H, W, 3], rgb8) stamped with
    ``stamp_ns`` and returns the decoded ``ActionReply`` answering that stamp.
    """
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import String

    from tgrpo_ros.nodes import messages, topics

    replies = []
    node = client.node
    subscription = node.create_subscription(
        JointState, topics.client_topic(namespace, topics.ACTION_TOPIC),
        lambda msg: replies.append(messages.decode_action(msg)), topics.ACTION_QOS)
    image_pub = node.create_publisher(
        Image, topics.client_topic(namespace, topics.CAMERA_TOPIC), topics.IMAGE_QOS)
    text_pub = node.create_publisher(
        String, topics.client_topic(namespace, topics.INSTRUCTION_TOPIC),
        topics.INSTRUCTION_QOS)
    try:
        client.wait_for_subscribers(image_pub)
        client.wait_for_subscribers(text_pub)
        client.wait_for_publishers(subscription)
        request = messages.numpy_to_image(image, stamp=stamp_ns)

        def publish():
            text_pub.publish(String(data=instruction))
            image_pub.publish(request)
        client.publish_until(publish, lambda: any(r.stamp_ns == stamp_ns for r in replies),
                             timeout, f'the action reply to stamp {stamp_ns}')
        return next(r for r in replies if r.stamp_ns == stamp_ns)
    finally:
        node.destroy_subscription(subscription)
        node.destroy_publisher(image_pub)
        node.destroy_publisher(text_pub)
