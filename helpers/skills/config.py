"""Stage 1's parameters: every name in the notebook's `parameters` cell is a field here, checked before any call."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import StageConfig, param, shared
from ..llm.endpoint import Endpoint
from ..params import ParameterError, check_choice, check_existing_path, check_float, check_int
from .dedup import DEDUP_METHODS
from .formats import TOPIC_HEADER_RULES
from .official_lists import is_official, official_list_path

SKILL_SOURCES = ("direct", "dataset", "import")
FALLBACKS = ("shipped", "none")
EMBEDDING_BACKENDS = ("auto", "minilm", "tfidf")
MAP_METHODS = ("pca", "tsne")


@dataclass
class SkillExtractionConfig(StageConfig):
    """Stage 1: which route gets the skills and query types, how big the lists are, how duplicates are merged."""

    run_dir: str = shared("run_dir")
    seed: int = shared("seed")
    skill_source: str = param("direct", "'direct' (ask the teacher), 'dataset' (label and cluster a seed dataset) or "
                                        "'import' (read SKILLS_PATH / QUERY_TYPES_PATH).")
    teacher_model: str = shared("teacher_model")
    teacher_base_url: str = shared("teacher_base_url")
    teacher_api_key_env: str = shared("teacher_api_key_env")
    max_concurrency: int = shared("max_concurrency")
    request_timeout: float = shared("request_timeout")
    request_attempts: int = shared("request_attempts")
    local_dtype: str = shared("local_dtype")
    local_engine: str = shared("local_engine")
    teacher_max_requests_per_minute: float | None = shared("teacher_max_requests_per_minute")
    teacher_max_tokens_per_minute: float | None = shared("teacher_max_tokens_per_minute")
    teacher_batch: bool = shared("teacher_batch")
    num_topics: int = param(3, "direct route: how many topics to ask the teacher for.")
    skills_per_topic: int = param(5, "direct route: how many skills to ask for per topic.")
    num_query_types: int = param(4, "How many query types to ask the teacher for (the paper has 16).")
    temperature: float = shared("temperature")
    extract_max_tokens: int = param(200, "Longest teacher reply per extraction call, in tokens (a real teacher: "
                                         "about 2000).")
    dedup_method: str = param("embedding", "'embedding' (meaning, all-MiniLM-L6-v2), 'fuzzy' (spelling, rapidfuzz) "
                                           "or 'exact' (normalised names only).")
    skill_dedup_threshold: float = param(0.9, "Similarity in [0, 1] at or above which two skills are one; 0.9 suits "
                                              "the embedding method, 0.93 the fuzzy one.")
    embedding_backend: str = param("auto", "'auto' (MiniLM if installed, else TF-IDF character n-grams), 'minilm' or "
                                           "'tfidf'.")
    skills_path: str = shared("skills_path")
    query_types_path: str = shared("query_types_path")
    topic_headers: str = param("auto", "How to treat topic-header lines in an imported skills.txt: 'auto', 'blocks' "
                                       "(always look for them) or 'none' (every line is a skill, like the official "
                                       "code).")
    import_merge: bool = param(True, "Merge exact and near duplicates of an imported skill list (False: keep every "
                                     "line in file order, as the official generation code samples them).")
    instruct_skillmix_repo: str = shared("instruct_skillmix_repo")
    seed_dataset: str = param("shipped", "dataset route: 'shipped', a local .json/.jsonl file, or a hub dataset id "
                                         "such as 'tatsu-lab/alpaca'.")
    seed_dataset_field: str = param("", "The seed dataset's field that holds the instruction ('' = guess: "
                                        "instruction, prompt, ...).")
    seed_dataset_split: str = param("", "Split of a hub seed dataset ('' = train, or the first one).")
    seed_dataset_limit: int = param(24, "Label at most this many seed instructions (a seeded sample; 0 = all).")
    cluster_batch_size: int = param(40, "dataset route: labels shown to the teacher per clustering call.")
    num_clusters: int = param(8, "dataset route: roughly how many clusters (final skills) to ask for in total.")
    min_skills: int = param(2, "Fewest usable skills stage 2 can work with (it draws K_SKILLS=2 per example).")
    min_query_types: int = param(1, "Fewest usable query types stage 2 can work with.")
    fallback: str = param("shipped", "When too few skills or query types come out: 'shipped' tops up from the kit's "
                                     "lists (said in the notebook and recorded), 'none' stops with an error.")
    map_method: str = param("pca", "Projection of the 2-D skill map figure: 'pca' or 'tsne'.")
    dry_run: bool = shared("dry_run")

    def check_values(self) -> None:
        if not str(self.run_dir).strip():
            raise ParameterError("RUN_DIR", "is empty", "use a folder such as 'runs/demo'")
        check_choice("SKILL_SOURCE", self.skill_source, SKILL_SOURCES)
        self.teacher().validate()
        self.max_concurrency = check_int("MAX_CONCURRENCY", self.max_concurrency, 1, 4096)
        self.num_topics = check_int("NUM_TOPICS", self.num_topics, 1, 1000)
        self.skills_per_topic = check_int("SKILLS_PER_TOPIC", self.skills_per_topic, 1, 500)
        self.num_query_types = check_int("NUM_QUERY_TYPES", self.num_query_types, 1, 200)
        if self.temperature is not None:
            self.temperature = check_float("TEMPERATURE", self.temperature, 0.0, 2.0)
        if not isinstance(self.import_merge, bool):
            raise ParameterError("IMPORT_MERGE", f"expected True or False, got {self.import_merge!r}",
                                 "use True or False")
        self.extract_max_tokens = check_int("EXTRACT_MAX_TOKENS", self.extract_max_tokens, 16, 32768)
        self.seed = check_int("SEED", self.seed, 0)
        check_choice("DEDUP_METHOD", self.dedup_method, DEDUP_METHODS)
        self.skill_dedup_threshold = check_float("SKILL_DEDUP_THRESHOLD", self.skill_dedup_threshold, 0.0, 1.0)
        check_choice("EMBEDDING_BACKEND", self.embedding_backend, EMBEDDING_BACKENDS)
        check_choice("TOPIC_HEADERS", self.topic_headers, TOPIC_HEADER_RULES)
        self.seed_dataset_limit = check_int("SEED_DATASET_LIMIT", self.seed_dataset_limit, 0)
        self.cluster_batch_size = check_int("CLUSTER_BATCH_SIZE", self.cluster_batch_size, 2, 5000)
        self.num_clusters = check_int("NUM_CLUSTERS", self.num_clusters, 1, 10000)
        self.min_skills = check_int("MIN_SKILLS", self.min_skills, 0)
        self.min_query_types = check_int("MIN_QUERY_TYPES", self.min_query_types, 0)
        check_choice("FALLBACK", self.fallback, FALLBACKS)
        check_choice("MAP_METHOD", self.map_method, MAP_METHODS)
        if self.skill_source == "import" and not self.skills_path:
            raise ParameterError("SKILLS_PATH", "is empty but SKILL_SOURCE='import'",
                                 "point SKILLS_PATH at a skills.txt or skills.jsonl, or use SKILL_SOURCE='direct'")

    def check_inputs(self) -> None:
        """Files the user names (stage 1 reads no earlier stage)."""
        if self.instruct_skillmix_repo:
            check_existing_path("INSTRUCT_SKILLMIX_REPO", self.instruct_skillmix_repo, "folder")
        for name, value in (("SKILLS_PATH", self.skills_path), ("QUERY_TYPES_PATH", self.query_types_path)):
            if is_official(value):
                official_list_path(name, value)  # fetched when the stage starts
            elif value:
                path = check_existing_path(name, value)
                if path.suffix not in (".txt", ".jsonl", ".json"):
                    raise ParameterError(name, f"{path.name!r} is neither .txt, .jsonl nor .json",
                                         "give an official skills.txt / queries.txt or the kit's JSONL records")
        if self.skill_source == "dataset" and self.seed_dataset not in ("", "shipped"):
            local = Path(self.seed_dataset).expanduser()
            looks_local = self.seed_dataset.endswith((".json", ".jsonl")) or self.seed_dataset.startswith((".", "/", "~"))
            if looks_local and not local.exists():
                raise ParameterError("SEED_DATASET", f"{self.seed_dataset!r} does not exist",
                                     "use 'shipped', an existing .json/.jsonl file, or a hub id like 'tatsu-lab/alpaca'")

    def teacher(self) -> Endpoint:
        return Endpoint.from_params(self, "TEACHER")

    @property
    def needs_teacher(self) -> bool:
        """Import needs no model: a missing query-type list is then taken from the shipped one."""
        return self.skill_source != "import"

    def sampling(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "max_tokens": self.extract_max_tokens, "seed": self.seed}
