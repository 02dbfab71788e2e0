"""
Service calls that survive a response Fast DDS drops.

rmw_fastrtps sends a service's response only once the server has matched the
client's response reader, and waits for that ``max_blocking_time`` (100 ms by
default); after that the response is dropped ("failed to send response (timeout):
client will not receive response", ros2/rmw_fastrtps#704). Discovery is not
symmetric: the client can see the service ready before the server has matched it
back, which on a loaded machine takes longer than 100 ms, and the client then waits
for a response that never comes. A query (a request that may be carried out twice,
such as ``get_state`` or ``set_parameters`` with the same values) is therefore sent
again every ``resend_every`` s until one response arrives. A request that must not
run twice (a lifecycle transition, a reset) is sent once.
"""

import time

QUERY_RESEND = 1.0  # s between sends of a query that has no response yet


def call_service(client, request, spin_once, timeout, resend_every=None):
    """
    Send ``request`` on ``client``; return the first response, or None after ``timeout`` s.

    ``spin_once(seconds)`` processes the caller's callbacks. With ``resend_every`` the
    request is sent again that often until a response arrives; the other sends are
    then forgotten (a late response to one of them is dropped).
    """
    futures = [client.call_async(request)]
    sent = time.monotonic()
    deadline = sent + timeout
    while True:
        answered = next((future for future in futures if future.done()), None)
        now = time.monotonic()
        if answered is not None or now > deadline:
            break
        if resend_every and now - sent >= resend_every:
            futures.append(client.call_async(request))
            sent = now
        spin_once(0.05)
    for future in futures:
        if future is not answered:
            client.remove_pending_request(future)
    return None if answered is None else answered.result()
