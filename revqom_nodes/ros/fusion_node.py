"""``fusion_node``: every agent's EncodedBEV -> fused 3D detections in the ego LiDAR frame.

Threads, so that reception never waits on verification or inference (``ros/worker.py``): per
agent topic a reception thread (its own node, ``<name>_rx_<agent>``, and executor) whose callback
takes each message serialized, parses it (``conversions.cdr_to_slice``), runs the cheap checks
(``Inbox.screen``) and queues it per sender (``runtime/intake.py``, ``fusion.intake_depth``); a
verify worker checks signatures, decodes and buffers the slices in the ``Inbox``
(``Inbox.accept``); a fusion worker hands each ego frame and each other agent's paired message
to the fusion process, a child that runs the engine with an interpreter of its own
(``runtime/fusion_process.py``; see ``runtime/inbox.py`` for the pairing and
``fusion.sync_wait_ms``), and publishes the result; the main thread spins
the node itself (publishers, parameters, the clock). A flood costs its topic's reception thread
microseconds per message, never delays another topic's messages and cannot push another
sender's slices out (docs/security.md, "Flood resistance"). Per ego frame it
publishes a Detection3DArray (reliable; ego LiDAR frame, ego sweep stamp; every box), a
MarkerArray for RViz (the boxes scoring at least ``output.display_min_score``) and a
FusionStatus (with the share of each agent's cells that arrived, when agents send their maps
in slices, and why a partner was not fused: the partners in range adding the most occupied
cells to the ego's view per payload byte are taken first within ``fusion.max_partners`` and
``fusion.max_bytes_per_frame``, ``runtime/selection.py``). A frame that fuses no partner is
detected by the model's ego-only head when the model file has one (``runtime/fusion.py``); the
node logs each switch between that head and the cooperative one. With
``fusion.merge_ego_detections``, that head's boxes on the ego's map alone join the cooperative
ones in every frame that fuses partners.
With ``security.trust_dir``, every slice must be signed by the agent its topic belongs to
(``security.mode``; ``runtime/security.py``, docs/security.md); the clock-skew check reads the
node's ROS clock (``use_sim_time`` under a replay). Rejected messages, bad slices and
unauthentic ones included, and partners left out by the comm range are counted by reason and
logged (rate-limited); the node keeps running whatever it receives.

Parameters: see ``config/fusion.param.yaml`` and the node tables in README.md.
"""

from __future__ import annotations

import math
import sys
import threading
import time
from collections.abc import Callable

import rclpy
from rclpy.executors import Executor, ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from revqom.msg import Detection3DArray, EncodedBEV, FusionStatus
from std_msgs.msg import Header
from visualization_msgs.msg import MarkerArray

from revqom_nodes.process import configure_process
from revqom_nodes.ros.conversions import (
    boxes_to_markers,
    cdr_to_slice,
    detections_to_msg,
    ns_to_stamp,
)
from revqom_nodes.ros.lifecycle import exit_process, run_node
from revqom_nodes.ros.parameters import declare_parameters
from revqom_nodes.ros.qos import ENCODED_BEV_QOS, MARKER_QOS, RESULT_QOS
from revqom_nodes.ros.worker import Worker
from revqom_nodes.runtime.errors import RuntimeConfigError
from revqom_nodes.runtime.frames import AssembledMap
from revqom_nodes.runtime.fusion import FusionResult
from revqom_nodes.runtime.fusion_process import FusionProcess
from revqom_nodes.runtime.inbox import Inbox, Screened
from revqom_nodes.runtime.intake import Intake
from revqom_nodes.runtime.latency import RateLimiter
from revqom_nodes.runtime.model import load_runtime_model, resolve_device
from revqom_nodes.runtime.security import SecurityMode, SliceGuard, parse_security_mode
from revqom_nodes.runtime.selection import NotFused, PartnerLimits
from revqom_nodes.runtime.validation import Expectations, Rejected, RejectReason

LOG_INTERVAL_S = 5.0
SPIN_TIMEOUT_S = 0.2  # the longest a Ctrl-C waits to be noticed
GIL_SWITCH_INTERVAL_S = 0.0005  # a thread waiting for the GIL gets it after this (Python's default: 5 ms)


class FusionNode(Node):
    """Fuses the ego's and its partners' encoded BEV maps and publishes detections."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__("fusion_node", **kwargs)
        params = declare_parameters(self, "fusion")
        agent_ids, topics = params["fusion.agent_ids"], params["fusion.agent_topics"]
        if not params["model.path"]:
            raise RuntimeConfigError("parameter model.path is required")
        if len(agent_ids) != len(topics):
            raise RuntimeConfigError(
                f"fusion.agent_ids {agent_ids} and fusion.agent_topics {topics} differ in length"
            )
        configure_process(params["torch.num_threads"])
        device = resolve_device(params["device"])  # checked here: the fusion process uses it
        comm_range_m = params["fusion.comm_range_m"]
        limits = PartnerLimits(params["fusion.max_partners"], params["fusion.max_bytes_per_frame"]).check()
        # The fusion runs in a process of its own, which in this one would compete for the GIL with
        # the reception threads (runtime/fusion_process.py); it loads the model while this one does
        self.engine = FusionProcess(
            params["model.path"],
            device=str(device),
            num_threads=params["torch.num_threads"],
            comm_range_m=comm_range_m if comm_range_m > 0 else None,
            limits=limits,
            merge_ego_detections=params["fusion.merge_ego_detections"],
        )
        try:
            self.model = load_runtime_model(params["model.path"], "cpu")  # what reception checks against
            self.engine.wait_ready()
            trust_dir = params["security.trust_dir"]
            mode = parse_security_mode(params["security.mode"], trust_dir)
            guard = None
            if mode is not SecurityMode.OFF:
                guard = SliceGuard.load(
                    trust_dir,
                    mode=mode,
                    max_clock_skew_ms=params["security.max_clock_skew_ms"],
                    clock_ns=self._ros_clock_ns,
                )
            self.inbox = Inbox(
                Expectations.of(self.model),
                agent_ids=agent_ids,
                ego_agent_id=params["fusion.ego_agent_id"],
                max_age_ms=params["fusion.max_age_ms"],
                sync_wait_ms=params["fusion.sync_wait_ms"],
                sweep_period_ms=params["fusion.sweep_period_ms"],
                buffer_size=params["fusion.buffer_size"],
                guard=guard,
            )
            self.intake: Intake[Screened] = Intake(
                depth=params["fusion.intake_depth"],
                new_sweep_slices_per_s=params["fusion.intake_new_sweep_slices_per_s"],
            )
        except BaseException:  # the node is not made: end the fusion process it started
            self.engine.close()
            raise
        self.display_min_score: float = params["output.display_min_score"]
        self.frames_published = 0
        self._dropped_reported = 0
        self._ego_head = False  # the last frame's detections came from the ego-only head
        self.limiter = RateLimiter(LOG_INTERVAL_S)

        # Subscriptions first: once the publishers are visible the node is ready (the replay waits for them).
        # Each agent's topic has its own reception node, spun by its own executor thread (``_spin``): a
        # flood on one topic queues behind itself, never in front of another agent's slices.
        self.receivers = [self._reception_node(agent_id) for agent_id in agent_ids]
        self._reception_threads: list[threading.Thread] = []
        self._stop_reception = threading.Event()
        self._reception_failure: Exception | None = None
        for receiver, agent_id, topic in zip(self.receivers, agent_ids, topics, strict=True):
            receiver.create_subscription(EncodedBEV, topic, self._receiver(agent_id), ENCODED_BEV_QOS,
                                         raw=True)
        self.detections_pub = self.create_publisher(
            Detection3DArray, params["output.detections_topic"], RESULT_QOS
        )
        self.markers_pub = self.create_publisher(MarkerArray, params["output.markers_topic"], MARKER_QOS)
        self.status_pub = self.create_publisher(FusionStatus, params["output.status_topic"], RESULT_QOS)
        self.worker = Worker(self, "fusion", self.inbox.next_ego, self._fuse)
        self.verifier = Worker(self, "verify", self.intake.take, self._accept)
        self.get_logger().info(
            f"fusing {list(zip(agent_ids, topics, strict=True))} (ego {params['fusion.ego_agent_id']}) "
            f"on {device}, max_age_ms {params['fusion.max_age_ms']:g}, "
            f"sync_wait_ms {params['fusion.sync_wait_ms']:g}, max_partners {limits.max_partners}, "
            f"max_bytes_per_frame {limits.max_bytes_per_frame}, codebook {self.model.codebook_id[:12]}, "
            f"security {mode.value}{f' ({trust_dir})' if guard is not None else ''}, "
            f"ego-only head {'yes' if self.model.detector.ego_head is not None else 'no'}, "
            f"merge_ego_detections {params['fusion.merge_ego_detections']}"
        )

    # ---- reception (executor threads) and verification (verify worker) -----------------
    def _reception_node(self, agent_id: str) -> Node:
        """A node that only holds ``agent_id``'s subscription, in this node's namespace; it ignores
        the command line's remappings (a launch file's ``__node`` would rename it to this node's name)."""
        name = f"{self.get_name()}_rx_{''.join(c if c.isalnum() else '_' for c in agent_id)}"
        return Node(name, namespace=self.get_namespace(), context=self.context,
                    use_global_arguments=False, start_parameter_services=False)

    def _ros_clock_ns(self) -> int:
        """The node's ROS clock, ns: the replay's ``/clock`` when sim time is active, else the
        system clock, read directly (``Clock.now()`` costs 7 µs, once per slice received)."""
        clock = self.get_clock()
        return clock.now().nanoseconds if clock.ros_time_is_active else time.time_ns()

    def _receiver(self, topic_agent_id: str) -> Callable[[bytes], None]:
        def receive(raw: bytes) -> None:
            try:
                message = cdr_to_slice(raw, time.time_ns())
            except ValueError as exc:
                self._rejected(topic_agent_id, Rejected(RejectReason.MALFORMED_PAYLOAD, str(exc)))
                return
            try:
                screened = self.inbox.screen(message, topic_agent_id)
            except Rejected as rejected:
                self._rejected(topic_agent_id, rejected, counted=True)
                return
            offered = self.intake.offer(screened.sender, screened.sweep, screened)
            if offered.dropped:
                self._overflow(topic_agent_id, offered.dropped)
            if offered.wake:
                self.verifier.wake()

        return receive

    def _accept(self, screened: Screened) -> None:
        try:
            self.inbox.accept(screened)
        except Rejected as rejected:
            self.intake.refuse(screened.sender, screened.sweep)
            self._rejected(screened.message.agent_id, rejected, counted=True)
            return
        dropped = self.intake.confirm(screened.sender, screened.sweep)
        if dropped:
            self._overflow(screened.message.agent_id, dropped)
        self.worker.wake()

    def _overflow(self, agent_id: str, dropped: int) -> None:
        """Count; the message (and its log line) only when the limiter lets one through: under a
        flood this runs once per forged slice."""
        self.inbox.count(RejectReason.INTAKE_OVERFLOW, dropped)
        if self.limiter.allow(RejectReason.INTAKE_OVERFLOW.value):
            detail = f"{dropped} queued unverified, pushed out by newer ones"
            self._log_rejected(agent_id, Rejected(RejectReason.INTAKE_OVERFLOW, detail))

    def _rejected(self, agent_id: str, rejected: Rejected, *, counted: bool = False) -> None:
        """Count (unless the Inbox did) and log, rate-limited per reason."""
        if not counted:
            self.inbox.count(rejected.reason)
        if self.limiter.allow(rejected.reason.value):
            self._log_rejected(agent_id, rejected)

    def _log_rejected(self, agent_id: str, rejected: Rejected) -> None:
        so_far = self.inbox.rejected_counts()[rejected.reason.value]
        self.get_logger().warning(
            f"rejected a message on the {agent_id[:64]} topic: {rejected} ({so_far} so far)"
        )

    # ---- fusion worker ------------------------------------------------------------------
    def _fuse(self, ego: AssembledMap) -> None:
        dropped = self.inbox.ego_frames_dropped
        if dropped > self._dropped_reported and self.limiter.allow("ego_frames_dropped"):
            self._dropped_reported = dropped
            self.get_logger().warning(f"fusion is behind the ego's frames: {dropped} dropped so far")
        partners = self.inbox.partners_of(ego)
        try:
            result = self.engine.fuse(ego, partners)
        except Exception as exc:  # a failure in one frame must not stop the node
            if self.limiter.allow("fusion_error"):
                self.get_logger().error(f"fusion of ego frame {ego.stamp_ns} failed: {exc!r}")
            return
        if result.out_of_range:
            self.inbox.count(RejectReason.OUT_OF_RANGE, result.out_of_range)
        if result.ego_head != self._ego_head:
            self._ego_head = result.ego_head
            self.get_logger().info("no partner fused: the ego-only head detects" if result.ego_head
                                   else "partners fused again: the cooperative head detects")
        header = Header(stamp=ns_to_stamp(ego.stamp_ns), frame_id=ego.frame_id)
        self.detections_pub.publish(detections_to_msg(result.detections, header, result.fused_agent_ids))
        self.frames_published += 1
        if self.markers_pub.get_subscription_count():  # building markers costs 10-30 ms a frame
            boxes, scores = result.detections
            shown = scores >= self.display_min_score  # RViz draws the confident boxes only
            self.markers_pub.publish(boxes_to_markers(boxes[shown], scores[shown], header, "detections"))
        self.status_pub.publish(self._status(header, ego, partners, result))

    def _status(
        self, header: Header, ego: AssembledMap, partners: list[AssembledMap | NotFused], result: FusionResult
    ) -> FusionStatus:
        frames = [ego, *partners]
        counts = self.inbox.rejected_counts()
        fused = [agent_id in result.fused_agent_ids for agent_id in self.inbox.agent_ids]
        return FusionStatus(
            header=header,
            agent_ids=list(self.inbox.agent_ids),
            fused=fused,
            not_fused_reason=["", *("" if r is None else r.value for r in result.not_fused)],
            message_age_ms=[
                f.age_ms(ego.stamp_ns) if isinstance(f, AssembledMap) else math.nan for f in frames
            ],
            bytes_received=self.inbox.bytes_received(),
            cells_received_fraction=[
                f.cells_received_fraction if used else 0.0 for f, used in zip(frames, fused, strict=True)
            ],
            frames_published=self.frames_published,
            rejected_reasons=list(counts),
            rejected_counts=list(counts.values()),
            decode_fuse_ms=result.decode_fuse_ms,
            ego_head=result.ego_head,
        )

    def start_reception(self) -> None:
        """One executor thread per reception node (``_spin``)."""
        for receiver in self.receivers:
            thread = threading.Thread(target=self._spin_reception, args=(receiver,), name=receiver.get_name(),
                                      daemon=True)
            thread.start()
            self._reception_threads.append(thread)

    def _spin_reception(self, receiver: Node) -> None:
        executor = _executor(receiver)
        executor.add_node(receiver)
        try:
            while not self._stop_reception.is_set():
                executor.spin_once(timeout_sec=SPIN_TIMEOUT_S)
        except ExternalShutdownException:  # raised by spin_once once the context is shut down
            pass
        except Exception as exc:  # raised again on the main thread, as an exception in its own spin would be
            self._reception_failure = exc

    def check_reception(self) -> None:
        """Raise the exception that ended a reception thread, if one did."""
        if self._reception_failure is not None:
            raise self._reception_failure

    def destroy_node(self) -> None:
        self._stop_reception.set()
        for thread in self._reception_threads:
            thread.join()
        for receiver in self.receivers:
            receiver.destroy_node()
        self.verifier.stop()
        self.worker.stop()
        self.engine.close()
        super().destroy_node()


def _executor(node: Node) -> Executor:
    """rclpy's EventsExecutor where the distribution has it (Kilted; Humble and Jazzy get the
    default one): it takes each message in C++ as it arrives, where the default executor
    rebuilds a wait set in Python per message (measured on loopback with a callback that only
    counts, 4,000 messages/s for 5 s: all taken, against 56 %)."""
    try:
        from rclpy.experimental import EventsExecutor
    except ImportError:
        return SingleThreadedExecutor(context=node.context)
    return EventsExecutor(context=node.context)


def _spin(node: FusionNode) -> int:
    """Spin until Ctrl-C. ``spin_once`` in a loop: the EventsExecutor's ``spin()`` never returns
    to Python, so a KeyboardInterrupt would never be raised.

    The reception callbacks enter Python once per message while the verify and fusion workers
    run Python between their native calls: with the default 5 ms switch interval each callback
    could wait that long for the GIL, capping reception near 200 messages a second whenever a
    worker is busy; ``GIL_SWITCH_INTERVAL_S`` shortens the wait."""
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    node.start_reception()
    executor = _executor(node)
    executor.add_node(node)
    while rclpy.ok(context=node.context):
        executor.spin_once(timeout_sec=SPIN_TIMEOUT_S)
        node.check_reception()
    return 0


def main(args: list[str] | None = None) -> int:
    return run_node(FusionNode, "fusion_node", args, spin=_spin)


if __name__ == "__main__":
    exit_process(main())
