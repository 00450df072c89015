"""Stage 1: the skills and query types that data generation combines (notebooks/01_extract_skills.ipynb)."""
from .config import SkillExtractionConfig
from .embeddings import backend_description, embed_texts
from .extract import STAGE, SkillExtraction, extract_skills, load_seed_for, record_extraction, save_extraction
from .plots import plot_coverage, plot_dedup_stats, plot_skill_map, plot_skills_per_group

__all__ = ["STAGE", "SkillExtraction", "SkillExtractionConfig", "backend_description", "embed_texts", "extract_skills",
           "load_seed_for", "plot_coverage", "plot_dedup_stats", "plot_skill_map", "plot_skills_per_group",
           "record_extraction", "save_extraction"]
