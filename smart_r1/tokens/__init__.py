"""Motion tokens (k-disks vocabulary per agent type), sequential tokenizer, map tokens.

Public API: `MotionVocab`, `VocabConfig`, `build_motion_vocab`, `Tokenizer`,
`reconstruction_error`, `MapConfig`, `MapTokenizer`, `TokenizedScene`, and the geometry helpers
in `smart_r1.tokens.geometry` (`transform_to_global`, `closest_token`, `box_corners`, ...).
"""

from smart_r1.tokens.geometry import (  # noqa: F401
    TOKEN_BOX_SIZE,
    box_corners,
    closest_token,
    token_poses_global,
    transform_to_global,
    transform_to_local,
)
from smart_r1.tokens.map_tokens import MapConfig, MapTokenizer  # noqa: F401
from smart_r1.tokens.motion_vocab import MotionVocab, VocabConfig, build_motion_vocab  # noqa: F401
from smart_r1.tokens.tokenized_scene import TokenizedScene  # noqa: F401
from smart_r1.tokens.tokenizer import Tokenizer, reconstruct_trajectories, reconstruction_error  # noqa: F401
