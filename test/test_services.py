"""nodes.services.call_service: a query is sent again until answered; nothing else is."""

from rclpy.task import Future

from tgrpo_ros.nodes.services import call_service


class DroppingClient:
    """A service client whose server drops the first ``dropped`` responses (Fast DDS)."""

    def __init__(self, dropped):
        """Answer send number ``dropped + 1`` and every later one."""
        self.dropped, self.sent, self.removed = dropped, [], []

    def call_async(self, request):
        """Send ``request``: a future answered by ``spin_once`` unless its response is dropped."""
        future = Future()
        self.sent.append((request, future))
        return future

    def spin_once(self, seconds):
        """Deliver the responses that were not dropped."""
        for index, (request, future) in enumerate(self.sent):
            if index >= self.dropped and not future.done():
                future.set_result(f'state after {request}')

    def remove_pending_request(self, future):
        """Forget ``future`` (rclpy drops a late response to it)."""
        self.removed.append(future)


def test_a_query_whose_response_was_dropped_is_sent_again_and_answered():
    client = DroppingClient(dropped=2)
    response = call_service(client, 'get_state', client.spin_once, timeout=30.0,
                            resend_every=0.001)
    assert response == 'state after get_state'
    assert [request for request, _ in client.sent] == ['get_state'] * 3
    # The two sends whose responses were dropped are forgotten, the answered one is not.
    assert client.removed == [future for _, future in client.sent[:2]]


def test_a_request_that_must_not_run_twice_is_sent_once():
    client = DroppingClient(dropped=1)
    assert call_service(client, 'configure', client.spin_once, timeout=0.05) is None
    assert len(client.sent) == 1 and client.removed == [client.sent[0][1]]
    answered = DroppingClient(dropped=0)
    assert call_service(answered, 'configure', answered.spin_once, timeout=600.0,
                        resend_every=0.001) == 'state after configure'
    assert len(answered.sent) == 1 and answered.removed == []
