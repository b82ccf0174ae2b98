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
    "macro AUC": "the mean of the per-finding AUCs (each finding counts equally)",
    "mean ± sd": "mean and sample standard deviation of the AUC over the trained models "
    "(folds × seeds)",
    "CI": "{pct} patient-level bootstrap percentile interval of the model-mean AUC (test "
    "patients resampled; the training is not varied)",
    "Δ": "arm minus baseline: difference of their model-mean AUCs (positive = the arm is better)",
    "p (bootstrap)": "two-sided p-value of Δ from the paired patient bootstrap; * marks p < 0.05, "
    "not corrected for multiple comparisons",
    "J (models)": "number of (fold, seed) models trained for both the arm and the baseline",
    "corrected t": "Nadeau–Bengio corrected resampled t statistic of the per-model macro-AUC "
    "differences; it widens the plain t-test for the folds' overlapping training sets",
    "p (corrected)": "two-sided p-value of the corrected t with J - 1 degrees of freedom",
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
    "schedule": "epochs: same epochs for every arm; steps: same optimiser steps as the baseline",
    "resumed_from_epoch": "the run continued from a checkpoint saved after this epoch",
    "jax_backend": "the device JAX ran on (cpu, gpu)",
    "n_models": "trained (arm, fold, seed) models whose predictions the report read",
    "n_missing": "expected models whose predictions were not there yet (left out of the tables)",
    "split_source": "where the train/test split came from: the data set's official lists or a "
    "seeded patient holdout",
    "n_listed": "images listed by the data set before filtering",
    "n_unreadable": "listed images that could not be read (skipped)",
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
    "energy_kwh": "energy used, kilowatt hours (CodeCarbon estimate)",
    "co2eq_g": "emissions, grams of CO2 equivalent (CodeCarbon estimate)",
}

#: Summary keys built per test set and arm, by prefix.
SUMMARY_PREFIXES = {
    "macro_auc_": "macro AUC (mean over models) of <test set>_<arm>",
    "time_": "seconds spent on one part of the stage: read, prepare and write are summed over "
    "the loader and writer threads (they overlap compute, so they can exceed the wall time); "
    "wait_input / wait_output: the main thread waiting for loaders / writers",
    "p_models_": "p-value of the corrected resampled t-test across models, arm vs baseline, "
    "of <test set>_<arm>",
}


def summary_meaning(key: str) -> str:
    """The one-line meaning of a stage summary key, or "" if its name says it all."""
    if key in SUMMARY_KEYS:
        return SUMMARY_KEYS[key]
    for prefix, text in SUMMARY_PREFIXES.items():
        if key.startswith(prefix):
            return text
    return ""
