"""Probe what a frozen LLM's pooled states carry, outside the bench (scikit-learn, from PyPI).

Input: the flat files that `cargo run --release -p ckd-trainer --example dump_states -- GGUF
SAMPLES.BIN STATES_DIR DUMP` writes from a bench's cached states (`OUT/llm-states`). For a label
fraction, it draws labelled patients at random (numpy seeds, not the bench's draw), fits one
logistic regression per phenotype with C chosen on validation macro-AUC, and prints validation
and test macro-AUC for: the bag of concepts (tf-idf; concepts parsed from the rendered text by a
regular expression, an approximation of `ckd_core::visit::parse_spans` without knowledge
clauses), each (layer, pooling) of the LLM states (standardized), a 64-component PCA of them, and
the bag concatenated with the states at weight w.

    python3 scripts/llm_states_probe.py DUMP FRACTION SEEDS [sel]

`sel` limits the states to the input-mean of layers 6 and 12. An analysis tool: BENCHMARKS.md
quotes its figures as such; the bench's own rows come from `ckd bench`.
"""
import json, numpy as np, sys, re
from sklearn.linear_model import LogisticRegression
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.metrics import roc_auc_score
from sklearn.decomposition import PCA
import warnings; warnings.filterwarnings("ignore")
D=sys.argv[1]
def load(split):
    m=json.load(open(f"{D}/{split}.json")); L=len(m["layers"]); H=m["hidden"]
    x=np.fromfile(f"{D}/{split}.f32",np.float32).reshape(len(m["rows"]),L,2,H)
    y=np.zeros((len(m["rows"]),25),np.int8)
    for i,r in enumerate(m["rows"]):
        for l in r["labels"]: y[i,l]=1
    return x,y,m
xt,yt,mt=load("train"); xv,yv,mv=load("val"); xe,ye,me=load("test")
layers=mt["layers"]
def concepts(t):
    out=[]
    for pre,pat in [("dx","The patient-acquired disease is (.*?)\\. The patient had used"),("med","following medication: (.*?)\\. The surgical"),("proc","performed by the patient: (.*?)\\.(?: |$)")]:
        m=re.search(pat,t)
        if m:
            for c in m.group(1).split(", "):
                if c and c!="None": out.append(pre+":"+c.strip())
    return out
tf=TfidfVectorizer(analyzer=concepts)
bt=tf.fit_transform([r["text"] for r in mt["rows"]]).toarray(); bv=tf.transform([r["text"] for r in mv["rows"]]).toarray(); be=tf.transform([r["text"] for r in me["rows"]]).toarray()
print("bag features", bt.shape)
def mauc(y,p):
    a=[roc_auc_score(y[:,j],p[:,j]) for j in range(25) if 0<y[:,j].sum()<len(y)]
    return float(np.mean(a))
def fit(Xt,Y,Xv,Xe,Cs=(0.01,0.03,0.1,0.3,1,3,10)):
    best=None
    for C in Cs:
        pv=np.zeros((len(Xv),25)); pe=np.zeros((len(Xe),25))
        for j in range(25):
            if Y[:,j].min()==Y[:,j].max():
                pv[:,j]=Y[:,j].mean(); pe[:,j]=Y[:,j].mean(); continue
            m=LogisticRegression(C=C,max_iter=2000).fit(Xt,Y[:,j]); pv[:,j]=m.predict_proba(Xv)[:,1]; pe[:,j]=m.predict_proba(Xe)[:,1]
        v=mauc(yv,pv)
        if best is None or v>best[0]: best=(v,C,mauc(ye,pe))
    return best
subj=np.array([r["subject"] for r in mt["rows"]])
pats=np.unique(subj)
def std(a,ref):
    mu=ref.mean(0); sd=ref.std(0)+1e-6; return (a-mu)/sd
frac=float(sys.argv[2]); seeds=[int(s) for s in sys.argv[3].split(",")]
which=sys.argv[4] if len(sys.argv)>4 else "all"
res={}
for seed in seeds:
    rng=np.random.default_rng(seed)
    lab=set(rng.choice(pats, max(1,int(round(frac*len(pats)))), replace=False)) if frac<1 else set(pats)
    idx=np.array([i for i in range(len(subj)) if subj[i] in lab])
    Y=yt[idx]
    def rec(name,b): res.setdefault(name,[]).append(b); print(f"seed {seed} {name}: val {b[0]:.3f} C {b[1]} test {b[2]:.3f}",flush=True)
    rec("bag",fit(bt[idx],Y,bv,be))
    for li,l in enumerate(layers):
        for p,pn in enumerate(["last","mean"]):
            if which!="all" and (l,pn)!=(6,"mean") and (l,pn)!=(12,"mean"): continue
            Xt=std(xt[:,li,p],xt[:,li,p]); Xv=std(xv[:,li,p],xt[:,li,p]); Xe=std(xe[:,li,p],xt[:,li,p])
            rec(f"L{l}-{pn}",fit(Xt[idx],Y,Xv,Xe,Cs=(0.0003,0.001,0.003,0.01,0.03,0.1)))
            if pn=="mean" and l in (6,12):
                pca=PCA(64,random_state=0).fit(Xt)  # unsupervised, all train rows
                Pt,Pv,Pe=[pca.transform(a)/np.sqrt(pca.explained_variance_[:1]) for a in (Xt,Xv,Xe)]
                rec(f"L{l}-{pn}-pca64",fit(Pt[idx],Y,Pv,Pe))
                for w in (0.02,0.05):
                    Ct=np.hstack([bt,w*Xt]); Cv=np.hstack([bv,w*Xv]); Ce=np.hstack([be,w*Xe])
                    rec(f"bag+L{l}-{pn} w{w}",fit(Ct[idx],Y,Cv,Ce))
print("== mean over seeds (val, test)")
for k,v in res.items(): print(f"{k:28s} val {np.mean([b[0] for b in v]):.3f} test {np.mean([b[2] for b in v]):.3f}")
