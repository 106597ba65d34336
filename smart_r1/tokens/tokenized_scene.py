"""`TokenizedScene`: a `Scene` as motion tokens and map tokens, the model's input.

Time axis (WOMD, 10 Hz, 91 steps): one motion token spans 0.5 s = `STEPS_PER_TOKEN` steps.
Anchor poses sit at steps 0, 5, ..., 90 (`N_ANCHOR` = 19). Token `t` moves an agent from
anchor `t` to anchor `t + 1` (it holds the 5 poses at steps 5t+1 .. 5t+5 relative to the
anchor-`t` pose). The current step 10 is anchor `CURRENT_ANCHOR` = 2, so tokens 0-1 are
history and tokens 2-17 (16 tokens, 80 steps) are the future the simulator generates.

Anchor poses are the *tokenized* (reconstructed) poses, not the logged ones, so
tokenization error does not accumulate (sequential matching, SMART / CAT-K style).
numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

STEPS_PER_TOKEN = 5
N_ANCHOR = 19  # anchors at steps 0, 5, ..., 90
N_TOKEN_STEP = N_ANCHOR - 1  # 18 motion tokens per agent
CURRENT_ANCHOR = 2  # step 10
N_HISTORY_TOKEN = CURRENT_ANCHOR  # tokens 0, 1
N_FUTURE_TOKEN = N_TOKEN_STEP - N_HISTORY_TOKEN  # 16


@dataclass
class TokenizedScene:
    scenario_id: str
    # ----- agents (rows follow Scene agent order) -----
    agent_id: np.ndarray  # [n_agent] int64
    agent_type: np.ndarray  # [n_agent] int8, smart_r1.data.scene.AgentType
    agent_size: np.ndarray  # [n_agent, 3] float32 length, width, height (at the current step, or last valid)
    agent_z: np.ndarray  # [n_agent] float32 z at the current step (or last valid); tokens are 2-D
    sim_mask: np.ndarray  # [n_agent] bool, must be simulated (valid at current step)
    eval_mask: np.ndarray  # [n_agent] bool, SDC + tracks to predict
    sdc_index: int
    token_index: np.ndarray  # [n_agent, N_TOKEN_STEP] int64, index into the agent type's vocabulary; -1 if invalid
    token_valid: np.ndarray  # [n_agent, N_TOKEN_STEP] bool
    anchor_pose: np.ndarray  # [n_agent, N_ANCHOR, 3] float32 tokenized x, y, heading at anchor steps
    anchor_valid: np.ndarray  # [n_agent, N_ANCHOR] bool
    # ----- map tokens -----
    map_token_points: np.ndarray  # [n_map_token, n_map_point, 2] float32, global frame polyline points
    map_token_pose: np.ndarray  # [n_map_token, 3] float32 x, y, heading of the token's reference point
    map_token_kind: np.ndarray  # [n_map_token] int8, smart_r1.data.scene.MapKind of the source feature
    map_token_subtype: np.ndarray  # [n_map_token] int8, lane / road-line / road-edge subtype
    map_token_vocab_index: np.ndarray  # [n_map_token] int64, index into the map-segment vocabulary
    map_token_signal: np.ndarray  # [n_map_token, N_ANCHOR] int8 SignalState of the lane at each anchor step (0 if none)
    # ----- provenance (additive) -----
    vocab_id: str = ""  # MotionVocab.vocab_id the token indices refer to ("" if unknown)

    @property
    def n_agent(self) -> int:
        return int(self.agent_id.shape[0])

    @property
    def n_map_token(self) -> int:
        return int(self.map_token_pose.shape[0])
