"""Compare two run stores on what behaviour means: self-edit texts, each trial's answers, grades, final loss, steps,
self-edit and status, the base model's answers, and each round's selection and generator finetune.

    python benchmarks/compare_stores.py OLD_RUN_DIR NEW_RUN_DIR

Store keys of sequential runs written before schema 2 (stream in the round column) are read in today's form.
Prints one line per part and RESULT: SAME, or the differences."""
import json, sqlite3, sys
old, new = sys.argv[1], sys.argv[2]
def rows(path, q):
    db = sqlite3.connect(path); r = db.execute(q).fetchall(); db.close(); return r
def norm_cond(c, rnd, seq):
    if seq and c.startswith("step-"):
        return f"stream-{rnd}/{c}", 0
    return c, rnd
seq = "k-seq" in old
se_o = {}
for rnd, src, ctx, s, text in rows(old + "/store.sqlite", "SELECT round, source, context_id, sample, text FROM self_edits"):
    c, r = norm_cond(src, rnd, seq); se_o[(r, c, ctx, s)] = text
se_n = {(r, c, ctx, s): t for r, c, ctx, s, t in rows(new + "/store.sqlite", "SELECT round, source, context_id, sample, text FROM self_edits")}
tr_q = "SELECT round, condition, context_id, sample, seed, answers, grades, final_loss, steps, self_edit, status FROM trials"
tr_o = {}
for r, c, ctx, s, sd, *rest in rows(old + "/store.sqlite", tr_q):
    c, r = norm_cond(c, r, seq); tr_o[(r, c, ctx, s, sd)] = rest
tr_n = {(r, c, ctx, s, sd): rest for r, c, ctx, s, sd, *rest in rows(new + "/store.sqlite", tr_q)}
be = lambda p: {(c,): (a, g) for m, c, a, g in rows(p + "/store.sqlite", "SELECT model, context_id, answers, grades FROM base_evals")}
bad = 0
print(f"self-edits: old {len(se_o)} new {len(se_n)}; equal texts: {sum(se_o[k] == se_n.get(k) for k in se_o)}")
for k in se_o:
    if se_o[k] != se_n.get(k): bad += 1; print("  SE DIFF", k) if bad < 5 else None
print(f"trials: old {len(tr_o)} new {len(tr_n)}; keys missing in new: {sorted(set(tr_o) - set(tr_n))[:5]}")
same = 0
for k, v in tr_o.items():
    w = tr_n.get(k)
    if w is None: continue
    if v[:2] == w[:2] and v[3] == w[3] and (v[2] == w[2] or (v[2] is not None and w[2] is not None and abs(v[2] - w[2]) < 1e-6)) and v[4] == w[4] and v[5] == w[5]:
        same += 1
    else:
        bad += 1
        if bad < 8: print("  TRIAL DIFF", k, [x != y for x, y in zip(v, w)], v[2], w[2])
print(f"trials equal (answers, grades, final loss, steps, self-edit, status): {same} of {len(tr_o)}")
common = [k for k in tr_o if k in tr_n]
print(f"  of which answers and grades equal: {sum(tr_o[k][:2] == tr_n[k][:2] for k in common)} of {len(common)}; "
      "largest final-loss difference: "
      f"{max((abs(tr_o[k][2] - tr_n[k][2]) for k in common if tr_o[k][2] is not None and tr_n[k][2] is not None), default=0):.2e}")
bo = {k[0]: v for k, v in be(old).items()}; bn = {k[0]: v for k, v in be(new).items()}
print(f"base answers: old {len(bo)} new {len(bn)}; equal {sum(bo[c] == bn.get(c) for c in bo)}")
for key in ("selected:1", "selected:2", "sft:1", "sft:2"):
    o = rows(old + "/store.sqlite", f"SELECT value FROM meta WHERE key='{key}'")
    n = rows(new + "/store.sqlite", f"SELECT value FROM meta WHERE key='{key}'")
    if o:
        oo, nn = json.loads(o[0][0]), json.loads(n[0][0]) if n else None
        if isinstance(oo, list):
            same_sel = [(x["context_id"], x["sample"]) for x in oo] == [(x["context_id"], x["sample"]) for x in nn or []]
        else:
            same_sel = oo.get("final_loss") == (nn or {}).get("final_loss") and oo.get("steps") == (nn or {}).get("steps")
        print(f"{key}: same {same_sel}"); bad += not same_sel
print("RESULT:", "SAME" if bad == 0 else f"{bad} differences")
