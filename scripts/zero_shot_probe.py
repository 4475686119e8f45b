"""What the zero-shot teacher adds to a model trained on few labels (scikit-learn, from PyPI).

An analysis outside the bench. Inputs: the demo cohort's CKD-EHR rows (`ckd ingest`'s
`train.jsonl`, `val.jsonl`, `test.jsonl`, whose `output` holds the labels) and the raw
zero-shot scores that `ckd teacher zero-shot` wrote for the validation and test splits
(`OUT.scores.jsonl`; the row order is the split's order, ids `subject-visit-next`). No zero-shot
score of a training row is used.

For a label fraction and each seed it draws that fraction of the training rows at random
(rows, not patients: the jsonl rows carry no patient id; nothing of the unlabelled rows is used),
fits the bag-of-concepts logistic regression (one per phenotype, tf-idf of the concepts parsed
from the text, C chosen on validation macro-AUC), and adds the zero-shot score to its logit:
`logit_LR + w * z`, where z is the visit-centred zero-shot score standardized per phenotype
over the split (`ckd teacher zero-shot`'s probabilities before the sigmoid) and the one scalar w
is chosen on validation. It prints validation and test macro-AUC of the regression, the
zero-shot score alone and the combination, and the paired difference combination - regression
on the test split with a 95% patient-bootstrap interval (1,000 resamples of test patients).

    python3 scripts/zero_shot_probe.py SAMPLES_DIR VAL_SCORES TEST_SCORES FRACTION SEEDS [W]

With W, the weight is fixed at W instead of chosen on validation (validation then only picks C).
"""
import json, re, sys, warnings

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

warnings.filterwarnings("ignore")
samples, val_scores, test_scores, frac, seeds = sys.argv[1:6]
frac, seeds = float(frac), [int(s) for s in seeds.split(",")]
fixed_w = float(sys.argv[6]) if len(sys.argv) > 6 else None
PREFIX = "Disease that the patient may acquire: "


def rows(split):
    return [json.loads(l) for l in open(f"{samples}/{split}.jsonl")]


train, val, test = rows("train"), rows("val"), rows("test")
names = train[0]["instruction"].split("at the next visit: ", 1)[1].rstrip(".").split(", ")
assert len(names) == 25, names


def labels(rs):
    y = np.zeros((len(rs), 25), np.int8)
    for i, r in enumerate(rs):
        out = r["output"][len(PREFIX):] if r["output"].startswith(PREFIX) else r["output"]
        for n in out.rstrip(".").split(", "):
            if n in names:
                y[i, names.index(n)] = 1
    return y


yt, yv, ye = labels(train), labels(val), labels(test)


def concepts(t):
    out = []
    for pre, pat in [("dx", r"The patient-acquired disease is (.*?)\. The patient had used"),
                     ("med", r"following medication: (.*?)\. The surgical"),
                     ("proc", r"performed by the patient: (.*?)\.(?: |$)")]:
        m = re.search(pat, t)
        if m:
            out += [pre + ":" + c.strip() for c in m.group(1).split(", ") if c and c != "None"]
    return out


tf = TfidfVectorizer(analyzer=concepts)
bt = tf.fit_transform([r["input"] for r in train]).toarray()
bv, be = (tf.transform([r["input"] for r in rs]).toarray() for rs in (val, test))


def zscores(path, n):
    recs = [json.loads(l) for l in open(path)]
    assert len(recs) == n, f"{path}: {len(recs)} scores for {n} rows"
    raw = np.array([r["raw"] for r in recs], np.float64)
    c = raw - raw.mean(1, keepdims=True)  # centre each visit's 25 scores
    z = (c - c.mean(0)) / np.where(c.std(0) > 0, c.std(0), 1)  # standardize each phenotype
    return z, [r["id"].split("-")[0] for r in recs]


zv, _ = zscores(val_scores, len(val))
ze, test_subjects = zscores(test_scores, len(test))


def aucs(y, s):
    return np.array([roc_auc_score(y[:, j], s[:, j]) if 0 < y[:, j].sum() < len(y) else np.nan for j in range(25)])


def mauc(y, s):
    return float(np.nanmean(aucs(y, s)))


def lr_logits(idx):
    best = None
    for C in (0.01, 0.03, 0.1, 0.3, 1, 3, 10):
        lv, le = np.zeros((len(val), 25)), np.zeros((len(test), 25))
        for j in range(25):
            y = yt[idx, j]
            if y.min() == y.max():  # one class among the labelled rows: its log-odds prior
                p = np.clip(y.mean(), 1e-3, 1 - 1e-3)
                lv[:, j] = le[:, j] = np.log(p / (1 - p))
                continue
            m = LogisticRegression(C=C, max_iter=2000).fit(bt[idx], y)
            lv[:, j], le[:, j] = m.decision_function(bv), m.decision_function(be)
        v = mauc(yv, lv)
        if best is None or v > best[0]:
            best = (v, C, lv, le)
    return best


patients = sorted(set(test_subjects))
rows_of = {p: [i for i, s in enumerate(test_subjects) if s == p] for p in patients}


def paired(a, b, reps=1000, seed=0):
    rng = np.random.default_rng(seed)
    d = []
    for _ in range(reps):
        idx = [i for p in rng.choice(patients, len(patients)) for i in rows_of[p]]
        d.append(mauc(ye[idx], a[idx]) - mauc(ye[idx], b[idx]))
    return np.percentile(d, [2.5, 97.5])


print(f"zero-shot alone: val {mauc(yv, zv):.3f} test {mauc(ye, ze):.3f}")
for seed in seeds:
    rng = np.random.default_rng(seed)
    n = len(train) if frac >= 1 else max(1, int(round(frac * len(train))))
    idx = np.sort(rng.choice(len(train), n, replace=False))
    v, C, lv, le = lr_logits(idx)
    ws = (0, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3)
    w = fixed_w if fixed_w is not None else max(ws, key=lambda w: mauc(yv, lv + w * zv))
    sv, se = lv + w * zv, le + w * ze
    lo, hi = paired(se, le)
    print(f"fraction {frac} seed {seed}: {n} labelled rows; LR (C {C}) val {v:.3f} test {mauc(ye, le):.3f}; "
          f"LR + {w} z val {mauc(yv, sv):.3f} test {mauc(ye, se):.3f}; "
          f"difference {mauc(ye, se) - mauc(ye, le):+.3f} [{lo:+.3f}, {hi:+.3f}]", flush=True)
