#!/usr/bin/env python3
"""Writes trainer/tests/data/logreg_sklearn.json: a small bag-of-concepts problem fitted with
scikit-learn, which the baseline test (trainer/src/baselines/tests.rs) must reproduce.

Run once (needs scikit-learn from PyPI); the output is committed, tests never run this.
Documents are lists of concept terms; each of 3 labels is a noisy function of a few terms.
The fits use a tight tolerance (tol=1e-10, max_iter=10000) so the coefficients are the optimum
of the objective, not an early stop of scikit-learn's lbfgs.
"""
import json, random, sys
import sklearn
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

rng = random.Random(2026)
terms = [f"dx:d{i}" for i in range(8)] + [f"med:m{i}" for i in range(8)] + [f"proc:p{i}" for i in range(4)]
docs, labels = [], []
for _ in range(120):
    k = rng.randint(1, 7)
    d = [rng.choice(terms) for _ in range(k)]  # repeats allowed: tf counts
    docs.append(d)
    s = set(d)
    y0 = ("dx:d0" in s or "med:m1" in s) != (rng.random() < 0.15)
    y1 = ("dx:d2" in s and "med:m3" in s) or rng.random() < 0.1
    y2 = rng.random() < 0.3 + 0.4 * ("proc:p1" in s)
    labels.append([int(y0), int(y1), int(y2)])

vec = TfidfVectorizer(analyzer=lambda d: d, norm="l2", use_idf=True, smooth_idf=True, sublinear_tf=False)
X = vec.fit_transform(docs)
vocab = sorted(vec.vocabulary_, key=vec.vocabulary_.get)
fits = []
for j in range(3):
    y = [l[j] for l in labels]
    m = LogisticRegression(C=1.0, tol=1e-10, max_iter=10000).fit(X, y)
    fits.append({"coef": m.coef_[0].tolist(), "intercept": float(m.intercept_[0]),
                 "proba_first5": m.predict_proba(X[:5])[:, 1].tolist()})
out = {"sklearn_version": sklearn.__version__, "C": 1.0, "docs": docs, "labels": labels,
       "vocab": vocab, "idf": vec.idf_.tolist(), "fits": fits}
json.dump(out, sys.stdout, indent=1)
sys.stdout.write("\n")
