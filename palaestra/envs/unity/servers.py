"""The gRPC server Unity calls: one unary method, ``Exchange``, which Unity calls with its output
and which is answered with the next input. Only one call is ever outstanding (Unity waits for each
answer before calling again), so a server here is a mailbox: :meth:`next_message` waits for
Unity's call, :meth:`reply` answers it.

Two servers, with the same methods (envs/unity/communicator.py uses whichever it is given):

* :class:`DirectServer`, the default: grpcio's core (its Cython layer, ``grpc._cython.cygrpc``,
  the layer grpcio's own servers are written on) driven from the trainer's thread. A call's
  arrival, its message and the answer's delivery are events on one completion queue, which the
  trainer polls while it waits; no other thread wakes. grpcio's public server hands every call
  between its polling thread, a pool thread and the trainer several times a step: on the 3DBall
  scene that cost 0.30 ms of its 0.52 ms of CPU per step, the direct server's whole step
  0.30 ms (docs/benchmarks.md).
* :class:`ThreadedServer`: grpcio's public server, where a pool thread runs the handler and hands
  the call to the trainer. Used where the Cython layer is not the one this module knows (a
  grpcio that renamed or reshaped it); ``PALAESTRA_GRPC_SERVER=threaded`` asks for it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from concurrent import futures
from typing import Protocol

from palaestra.envs.base import EnvError
from palaestra.envs.unity import messages as pb

logger = logging.getLogger("palaestra")

OK, CLOSING = 200, 400  # HeaderProto.status
MESSAGE_LIMIT = 512 * 1024 * 1024  # bytes; a scene of many cameras sends large messages
# SO_REUSEPORT off: two runs must never share a port silently
SERVER_OPTIONS = (("grpc.so_reuseport", 0), ("grpc.max_receive_message_length", MESSAGE_LIMIT),
                  ("grpc.max_send_message_length", MESSAGE_LIMIT))
EXCHANGE = f"/{pb.PACKAGE}.{pb.SERVICE}/Exchange"


def closing_message(text: str) -> object:
    message = pb.UnityMessageProto()
    message.header.status = CLOSING
    message.header.message = text
    return message


def port_taken(port: int) -> EnvError:
    return EnvError(f"cannot listen on port {port}: another process holds it")


class Server(Protocol):
    def next_message(self, timeout: float) -> object | None:
        """Unity's next message (a ``UnityMessageProto``), or None if none came within
        ``timeout`` seconds. Unity then waits in its call for :meth:`reply`."""

    def reply(self, message: object) -> None:
        """Answer the call Unity waits in."""

    def delivered(self, grace: float) -> bool:
        """Wait up to ``grace`` seconds for the last reply to be on its way to Unity; whether it is."""

    def stop(self, grace: float) -> None:
        """Stop listening; a call still open is given up to ``grace`` seconds."""


def make_server(port: int) -> Server:
    """A server listening on ``port`` (EnvError if something else holds it)."""
    chosen = os.environ.get("PALAESTRA_GRPC_SERVER", "direct")
    if chosen not in ("direct", "threaded"):
        logger.warning("PALAESTRA_GRPC_SERVER=%r is neither 'direct' nor 'threaded': using the direct server", chosen)
    if chosen != "threaded":
        try:
            return DirectServer(port)
        except (ImportError, AttributeError, TypeError) as e:  # another grpcio's Cython layer
            logger.debug("grpcio's core is not the one Palaestra's direct server knows (%s): using grpcio's "
                         "threaded server", e)
    return ThreadedServer(port)


_CALL, _REPLIED, _REFUSED, _SHUTDOWN = "call", "replied", "refused", "shutdown"  # completion tags
# (a message's completion is tagged with its call)


class DirectServer:
    """grpcio's core polled from the trainer's thread (module docstring)."""

    def __init__(self, port: int) -> None:
        from grpc._cython import cygrpc

        cy = self._cy = cygrpc
        # every name used later, looked up now: a grpcio that reshaped them falls back before binding
        self._timeout = cy.CompletionType.queue_timeout
        self._codes = (cy.StatusCode.ok, cy.StatusCode.internal, cy.StatusCode.unimplemented)
        self._ops = (cy.ReceiveMessageOperation, cy.SendInitialMetadataOperation, cy.SendMessageOperation,
                     cy.SendStatusFromServerOperation, cy.ReceiveCloseOnServerOperation)
        self._queue = cy.CompletionQueue()
        self._server = cy.Server(SERVER_OPTIONS, False)
        self._server.register_completion_queue(self._queue)
        if self._server.add_http2_port(f"[::]:{port}".encode()) != port:
            raise port_taken(port)
        try:
            self._server.start()
            # stopped when collected or at exit if not before: a core server left running keeps the
            # interpreter from exiting (its queue waits for the call it was asked to accept)
            self._teardown = weakref.finalize(self, _teardown, self._server, self._queue, self._timeout, 0.0)
            self._request_call()
        except BaseException:
            # the port is bound: let it go before the caller tries grpcio's threaded server on it
            _teardown(self._server, self._queue, self._timeout, 0.0)
            if hasattr(self, "_teardown"):
                self._teardown.detach()
            raise
        self._call: object = None  # the call Unity waits in, its message taken
        self._message: object = None  # a message received and not yet taken
        self._sending = False  # a reply's batch has not completed yet
        self._delivered = False  # whether the last reply's batch completed with success

    def next_message(self, timeout: float) -> object | None:
        deadline = time.time() + timeout
        while self._message is None:
            if not self._handle(self._queue.poll(deadline)):
                return None
        message, self._message = self._message, None
        return message

    def _request_call(self) -> None:
        _started(self._server.request_call(self._queue, self._queue, _CALL), "wait for Unity's next call")

    def _handle(self, event: object) -> bool:
        """Act on one completion; False when the poll's deadline passed."""
        if event.completion_type == self._timeout:
            return False
        tag = event.tag
        if tag == _CALL:
            if self._teardown.alive:
                self._request_call()  # ready for the next
            if event.success:
                self._accept(event)
        elif tag == _REPLIED:
            self._sending, self._delivered = False, bool(event.success)
        elif tag not in (_REFUSED, _SHUTDOWN) and event.success:  # a message arrived on the call ``tag``
            data = event.batch_operations[0].message()
            if data is not None:  # (None: the caller gave up before sending one)
                try:
                    message = pb.UnityMessageProto.FromString(data)
                except Exception as e:  # a DecodeError: not ML-Agents' protocol
                    self._finish(tag, self._codes[1], b"unreadable message", None, _REFUSED)
                    raise EnvError(f"a message from Unity could not be read as ML-Agents' protocol ({e})") from None
                self._call, self._message = tag, message
        return True

    def _accept(self, event: object) -> None:
        call, method = event.call, event.call_details.method
        if (method.decode() if isinstance(method, bytes) else method) != EXCHANGE:
            self._finish(call, self._codes[2], b"Palaestra serves ML-Agents' Exchange only", None, _REFUSED)
            return
        _started(call.start_server_batch((self._ops[0](0),), call), "read Unity's message")

    def _finish(self, call: object, code: object, details: bytes, data: bytes | None, tag: str) -> None:
        """End ``call``: initial metadata, the answer if any, the status, and the close (which
        completes the batch once Unity has it)."""
        _, initial, send, status, close = self._ops
        ops = [initial(None, 0)] + ([send(data, 0)] if data is not None else []) + \
            [status(None, code, details, 0), close(0)]
        _started(call.start_server_batch(tuple(ops), tag), "answer Unity's call")

    def reply(self, message: object) -> None:
        call, self._call = self._call, None
        if call is None:
            return  # no call waits (Unity gave up, or said goodbye)
        self._sending = True
        self._finish(call, self._codes[0], b"", message.SerializeToString(), _REPLIED)

    def delivered(self, grace: float) -> bool:
        deadline = time.time() + grace
        while self._sending and self._handle(self._queue.poll(deadline)):
            pass
        return not self._sending and self._delivered

    def stop(self, grace: float) -> None:
        if not self._teardown.alive:
            return
        try:
            if self._call is not None:  # a call still open (Unity's goodbye, which it may not wait on)
                self.reply(closing_message("the trainer has closed the connection"))
        finally:
            self._teardown.detach()
            _teardown(self._server, self._queue, self._timeout, grace)


def _started(code: object, what: str) -> None:
    """gRPC's core answers a request it cannot start with a non-zero call error (grpc_call_error)
    rather than an exception; left unchecked, the trainer would wait for a call that never comes."""
    if code:
        raise EnvError(f"the gRPC server could not {what} (gRPC call error {code})")


def _teardown(server: object, queue: object, timeout_type: object, grace: float) -> None:
    """Shut a core server down: calls still open get ``grace`` seconds, then are cancelled; the
    server is destroyed once its queue says it is shut down (destroying it before would spin)."""
    server.shutdown(queue, _SHUTDOWN)
    deadline, cancelled = time.time() + grace, False
    while True:
        event = queue.poll(deadline)
        if event.completion_type == timeout_type:
            if cancelled:  # not shut down 5 s after cancelling everything: leave it rather than spin
                logger.debug("a gRPC server did not shut down; left as it is")
                return
            server.cancel_all_calls()  # past the grace: end what is still open
            deadline, cancelled = time.time() + 5.0, True
        elif event.tag == _SHUTDOWN:
            server.destroy()
            return


class _Slot:
    """One message handed from one thread to another. The exchange alternates strictly (Unity's
    call, the answer, Unity's next call), so one slot per direction suffices; a bare lock as the
    signal costs half the CPU of a queue.Queue per hand-off (measured: 18 against 35 us per round
    trip), which the bridge pays twice per step."""

    def __init__(self) -> None:
        self._item: object = None
        self._full = threading.Lock()
        self._full.acquire()  # held while empty

    def put(self, item: object) -> None:
        self._item = item  # (an item nobody took, e.g. an answer to a call Unity gave up, is replaced)
        if self._full.locked():
            self._full.release()

    def take(self, timeout: float) -> object | None:
        """The item, or None if none came within ``timeout`` seconds."""
        if not self._full.acquire(timeout=timeout):
            return None
        item, self._item = self._item, None
        return item

    def empty(self) -> bool:
        return self._full.locked()


class ThreadedServer:
    """grpcio's public server: its pool thread runs :meth:`_on_exchange`, which hands Unity's
    message to the trainer and waits for the answer."""

    def __init__(self, port: int) -> None:
        import grpc

        self._incoming = _Slot()
        self._replies = _Slot()
        self._closed = threading.Event()
        handler = grpc.method_handlers_generic_handler(f"{pb.PACKAGE}.{pb.SERVICE}", {
            "Exchange": grpc.unary_unary_rpc_method_handler(
                self._on_exchange, request_deserializer=pb.UnityMessageProto.FromString,
                response_serializer=pb.UnityMessageProto.SerializeToString)})
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), handlers=[handler],
                                   options=list(SERVER_OPTIONS))
        try:
            bound = self._server.add_insecure_port(f"[::]:{port}")
        except RuntimeError:
            bound = 0
        if bound != port:
            self._server.stop(None)
            raise port_taken(port)
        self._server.start()

    def _on_exchange(self, request: object, context: object) -> object:  # in gRPC's pool thread
        self._incoming.put(request)
        while True:
            reply = self._replies.take(timeout=0.5)
            if reply is not None:
                return reply
            if self._closed.is_set() or not context.is_active():
                return closing_message("the trainer has closed the connection")

    def next_message(self, timeout: float) -> object | None:
        return self._incoming.take(timeout)

    def reply(self, message: object) -> None:
        self._replies.put(message)

    def delivered(self, grace: float) -> bool:
        deadline = time.monotonic() + grace
        while not self._replies.empty() and time.monotonic() < deadline:
            time.sleep(0.01)
        return self._replies.empty()

    def stop(self, grace: float) -> None:
        self._closed.set()
        self._server.stop(grace).wait(grace + 1.0)
