"""One-line meanings of the metrics and summary keys that report pages print.

:data:`REPORT_TERMS` explains the classification report's columns; :data:`SUMMARY_KEYS`
(exact keys) and :data:`SUMMARY_PREFIXES` (keys built per test set and arm) explain the
stage summaries in the pipeline page. Obvious keys (``n_images``, ``epochs``) have none.
"""

from __future__ import annotations

#: Terms of the classification report (``gensyn.report.render``), in reading order;
#: ``{pct}`` is the confidence level, e.g. 95%.
REPORT_TERMS = {
    "AUC": "area under the ROC curve of one finding: the chance that a random positive image "
    "scores above a random negative one (0.5 = guessing, 1 = perfect)",
    "macro AUC": "the mean of the per-finding AUCs over the findings that have one in the test "
    "set (each counts equally); the report names them under each AUC table",
    "n/a (no positive case)": "the test set has no image with this finding (no negative case: "
    "only images with it), so it has no AUC: it is left out of the macro AUC and not compared",
    "mean ± sd": "mean and sample standard deviation of the AUC over the trained models "
    "(folds × seeds)",
    "CI": "{pct} patient-level bootstrap percentile interval of the model-mean AUC (test "
    "patients resampled; the training is not varied)",
    "Δ": "arm minus baseline: mean over the J models trained for both (same fold and seed) of "
    "the difference of their AUCs (positive = the arm is better)",
    "Δ [CI]": "{pct} interval of Δ that covers both which test patients were drawn and which "
    "models training produced (t interval); † = test patients only (one model pair)",
    "p": "two-sided p-value of Δ = 0 from the same t; the primary comparison's is not adjusted",
    "Holm p": "p-value Holm-adjusted within its family: the macro comparisons of the other arms "
    "on one test set, or one arm's per-finding comparisons on one test set; * marks Holm "
    "p < 0.05",
    "J (models)": "number of (fold, seed) models trained for both the arm and the baseline",
    "SE parts": "square roots of the three variance parts of Δ: test-patient noise all models "
    "share, the spread of the paired models' differences (s/√J), and the widening for models "
    "trained on overlapping folds (Nadeau–Bengio); SE² is their sum",
    "df": "degrees of freedom of the t (Hillis' Satterthwaite approximation): J - 1 when the "
    "models' spread dominates, more when the test patients do",
    "p, test patients only / models only": "one-source tests, shown for comparison: the paired "
    "patient bootstrap (models held fixed) and the Nadeau–Bengio corrected resampled t-test "
    "(test set held fixed); neither is the headline",
}

#: Stage summary keys the pipeline page prints, where the name alone does not say enough.
SUMMARY_KEYS = {
    "duration_s": "wall-clock time of the stage in seconds",
    "domain_gap_acc_drr": "cross-validated accuracy of a logistic regression on intensity, "
    "edge and texture features telling held-out DRRs from real X-rays (0.5 = "
    "indistinguishable, 1.0 = trivially separable)",
    "domain_gap_acc_translated": "the same classifier telling translated (SyntheX) DRRs from "
    "real X-rays (0.5 = indistinguishable); lower than domain_gap_acc_drr = translation helped",
    "histogram_emd_drr_vs_real": "earth mover's distance between the intensity histograms of "
    "held-out DRRs and real X-rays (intensity units, 0 = same histogram)",
    "histogram_emd_translated_vs_real": "the same distance for translated DRRs vs real X-rays",
    "heldout_a": "held-out DRRs (domain A) used by the translation checks",
    "heldout_b": "held-out real X-rays (domain B) used by the translation checks",
    "train_images_a": "DRRs (domain A) the translation GAN trained on",
    "train_images_b": "real X-rays (domain B) the translation GAN trained on",
    "iterations_per_s": "training iterations (batches) per second in the last epoch",
    "images_per_s": "images processed per second (first read to last write)",
    "drrs_per_s": "DRRs rendered and written per second (first read to last write)",
    "cts_per_s": "CTs rendered per second (first read to last write)",
    "time_wall_s": "seconds from the stage's first read to its last write",
    "translated_now": "images translated in this run (the rest were already there: resumed)",
    "best_val_macro_auc": "best macro AUC on the validation split over the epochs; that "
    "epoch's weights are kept",
    "optimizer_steps": "optimiser updates taken in training",
    "schedule": "epochs: same epochs for every arm; steps: same optimiser steps as the "
    "baseline; real_epochs: every real image seen once per epoch, synthetic images on top",
    "real_images_seen": "real training images fed to the optimiser over the run, counted "
    "batch by batch (an image fed twice counts twice)",
    "synthetic_images_seen": "synthetic (DRR or SyntheX) images fed to the optimiser over the "
    "run, counted batch by batch",
    "real_times_seen_min": "the fewest times one real training image was fed",
    "real_times_seen_max": "the most times one real training image was fed",
    "synthetic_per_batch": "real_epochs: synthetic images in each batch (the arm's natural "
    "share, capped at classifier.synthetic_share)",
    "resumed_from_epoch": "the run continued from a checkpoint saved after this epoch",
    "jax_backend": "the device JAX ran on (cpu, gpu)",
    "n_models": "trained (arm, fold, seed) models whose predictions the report read",
    "primary": "the declared primary comparison of the classification report (report.primary)",
    "primary_delta": "its Δ AUC, arm minus baseline (mean over paired models)",
    "primary_p": "its two-sided p-value (not adjusted), over test patients and trained models",
    "n_missing": "expected models whose predictions were not there (left out of the tables): "
    "not scheduled plus started but not finished",
    "n_not_scheduled": "expected models never started (no run folder), e.g. the folds a "
    "one-fold pipeline does not train",
    "split_source": "where the train/test split came from: the data set's official lists or a "
    "seeded patient holdout",
    "n_listed": "images listed by the data set before filtering",
    "n_unreadable": "listed images that could not be read (skipped)",
    "n_patients_in_both_lists": "patients the official split lists put in both train and "
    "test (training on this data set refuses such a split)",
    "on_disk": "the data set was already in raw_dir: recorded without the network",
    "n_verified": "downloaded files whose checksum or size matched",
    "n_failed": "files that failed to download or verify",
    "accuracy": "reader study: share of scored answers that were right (real called real, "
    "synthetic called synthetic)",
    "accuracy_ci": "reader study: 95% interval of the accuracy that allows for readers and "
    "images differing (two-way cluster bootstrap)",
    "sensitivity": "reader study: share of synthetic images called synthetic",
    "specificity": "reader study: share of real images called real",
    "fleiss_kappa": "agreement between readers beyond chance (0 = chance, 1 = full agreement)",
    "uncertain_as": "how an 'unsure' answer was scored",
    "blinding_audit": "the pair of image sources simple image features told apart best: the "
    "classifier's cross-validated accuracy and the worst single feature, each with its "
    "permutation p-value, and the p-value at or below which a real/fake pair stops the build",
    "energy_kwh": "energy used, kilowatt hours (carbontracker's estimate from CPU/GPU power)",
    "co2eq_g": "emissions, grams of CO2 equivalent (carbontracker: energy × the grid's carbon "
    "intensity)",
}

#: Summary keys built per test set and arm, by prefix.
SUMMARY_PREFIXES = {
    "macro_auc_": "macro AUC (mean over models) of <test set>_<arm>",
    "time_": "seconds spent on one part of the stage: read, prepare and write are summed over "
    "the loader and writer threads (they overlap compute, so they can exceed the wall time); "
    "wait_input / wait_output: the main thread waiting for loaders / writers",
    "p_delta_": "p-value (unadjusted) of the macro-AUC difference arm vs baseline over test "
    "patients and trained models, of <test set>_<arm>",
}


def summary_meaning(key: str) -> str:
    """The one-line meaning of a stage summary key, or "" if its name says it all."""
    if key in SUMMARY_KEYS:
        return SUMMARY_KEYS[key]
    for prefix, text in SUMMARY_PREFIXES.items():
        if key.startswith(prefix):
            return text
    return ""
