"""Online resharding: which slots move where (:mod:`.plan`, pure) and the moving (:mod:`.mover`)."""

from dvecdb_operator.reshard.plan import Move, apply_move, moves, target_map

__all__ = ["Move", "apply_move", "moves", "target_map"]
