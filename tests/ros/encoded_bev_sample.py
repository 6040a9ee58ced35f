"""A fully populated EncodedBEV with a 36,864-byte payload (18 bits x 128 x 128 cells)."""

import numpy as np
from revqom.msg import EncodedBEV

PAYLOAD_BYTES = 128 * 128 * 18 // 8


def make_encoded_bev() -> EncodedBEV:
    message = EncodedBEV()
    message.header.stamp.sec = 1_626_155_000
    message.header.stamp.nanosec = 123_456_789
    message.header.frame_id = "infrastructure_lidar"
    message.agent_id = "infrastructure"
    message.role = EncodedBEV.ROLE_INFRASTRUCTURE
    message.sequence = 4_000_000_001
    message.lidar_pose.position.x = 2_803.1234567891
    message.lidar_pose.position.y = -1_234.987654321
    message.lidar_pose.position.z = 6.25
    message.lidar_pose.orientation.z = 0.38268343236508984
    message.lidar_pose.orientation.w = 0.9238795325112867
    message.height = 128
    message.width = 128
    message.cell_size_m = 1.6
    message.codebook_size = 64
    message.num_quantizers = 3
    message.codebook_id = "9f" * 32
    message.encoding = EncodedBEV.ENCODING_PACKED
    message.slice_index = 0
    message.num_slices = 1
    message.first_cell = 0
    message.num_cells = 128 * 128
    payload = np.random.default_rng(2026).integers(0, 256, PAYLOAD_BYTES, dtype=np.uint8)
    message.payload = payload.tobytes()  # bytes, never a numpy array (6.5 ms vs 5 us)
    return message
