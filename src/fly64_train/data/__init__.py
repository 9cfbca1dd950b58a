"""Study data: the NPZ contract, Phase C simulation, Phase D overlap views, grouping, the cache.

Submodules (import what you need; nothing heavy happens at import):
- `contract`: StudyData, load_dataset, save_dataset, ContractError
- `simulate`: make_probe, make_object, scan_positions, simulate_phase_c (simulate_doses for several
  doses sharing one far-field pass), split_y
- `overlap`: spaced_subset, overlap_metrics (disc_overlap)
- `grouping`: GroupIndex, make_groups, grouped
- `store`: dataset_paths, planned_paths, prepare_dose (prepare_study for several doses)
"""
from fly64_train.data.contract import ContractError, StudyData, load_dataset, save_dataset

__all__ = ["ContractError", "StudyData", "load_dataset", "save_dataset"]
