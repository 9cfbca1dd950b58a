"""Study data: the NPZ contract, Phase C simulation, Phase D overlap views, grouping, the sources
and the cache.

Submodules (import what you need; nothing heavy happens at import):
- `contract`: StudyData, load_dataset, save_dataset, ContractError
- `simulate`: make_probe, make_object, fly_scan_positions, simulate_phase_c (simulate_doses and
  iter_doses for several doses sharing one far-field pass), split_y
- `overlap`: spaced_subset, overlap_metrics (disc_overlap)
- `grouping`: GroupIndex, make_groups, grouped
- `sources`: Source, SOURCES, register, get_source (synthetic, npz)
- `recipe`: the study's synthetic data (StudyRecipe, ensure_phase_c, ensure_phase_d)
- `cache`: the generic content-addressed cache (Cache, locked)
- `store`: dataset_paths, planned_paths, prepare_dose (prepare_study for several doses)
"""
from fly64_train.data.contract import ContractError, StudyData, load_dataset, save_dataset

__all__ = ["ContractError", "StudyData", "load_dataset", "save_dataset"]
