"""The stage-1 figures build for ordinary, tiny and empty inputs (a tiny teacher often yields almost nothing)."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from helpers.skills.plots import plot_coverage, plot_dedup_stats, plot_skill_map, plot_skills_per_group, project_2d  # noqa: E402


def test_figures_for_normal_and_degenerate_inputs(tmp_path):
    skills = [{"skill": f"s{i}", "topic": ["cooking", "travel", None][i % 3], "source": "direct"} for i in range(9)]
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(9, 8))
    figures = [
        plot_skills_per_group(skills), plot_skills_per_group([]),
        plot_skill_map([s["skill"] for s in skills], [s["topic"] for s in skills], vectors),
        plot_skill_map(["one"], [None], vectors[:1]), plot_skill_map([], [], np.zeros((0, 8))),
        plot_dedup_stats({"num_raw": 9, "num_exact_merged": 1, "num_near_merged": 2, "num_kept": 6, "method": "fuzzy"},
                         {"dropped": {"prose around the list": 3}, "num_dropped": 3, "kept": 9, "empty_replies": 1}),
        plot_dedup_stats({}), plot_coverage({"a": 5, "b": 2, "c": 1}, num_instructions=10), plot_coverage({}),
    ]
    for index, fig in enumerate(figures):
        fig.savefig(tmp_path / f"{index}.png")
        plt.close(fig)
    assert len(list(tmp_path.glob("*.png"))) == len(figures)


def test_tsne_projection_for_larger_sets():
    xy = project_2d(np.random.default_rng(1).normal(size=(40, 5)), method="tsne")
    assert xy.shape == (40, 2)
