#!/usr/bin/python3
"""scaling_model.py [--inputs docs/scaling_inputs.json] [--markdown] [--write-doc] [--figure OUT.png]

A model of data-parallel CCViT pretraining throughput against the number of
ranks R (one rank per node of C cores) for ViT-Ti/S/B/16 at 224 px
(docs/scaling.md). Everything measured comes from the inputs file.

  compute(b)   = b / (C x per-core rate x intra-node efficiency); the per-core
                 rate is the measured ViT-Ti step rate over its cores, scaled to
                 ViT-S/B by executed step FLOPs per image (objective_step_flops).
  allreduce    = 2(R-1)/R x bytes / bandwidth + 2(R-1) x latency (ring; an
                 alltoall reduce-scatter + allgather moves the same volume).
  blocking     : exposed = allreduce(all gradients) after the backward.
  overlapped   : one allreduce per bucket as its backward finishes (heads,
                 block 12 + final norm, blocks 11..2, block 1 + embeddings), one
                 at a time on the link; bucket k is ready at t_k = tau_k x
                 backward (tau_k: its share of the backward FLOPs), so
                 exposed = max_k ( sum_{j>=k} c_j - (backward - t_k) ) >= c_last.
  negatives    : contrast_negatives global adds an all-gather of the embeddings
                 (G x views x proj_dim floats) and a reduce-scatter of their
                 gradients, both exposed, in both modes.
  efficiency   = compute / (compute + exposed); throughput = R x b / step time.

Prints the tables, then one line `scaling_summary: {json}` with the headline
numbers. --markdown prints the tables docs/scaling.md shows; --write-doc puts
them (and the headline) between the markers in docs/scaling.md.
"""
import argparse, json, math, os, sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
INPUTS = os.path.join(ROOT, "docs", "scaling_inputs.json")
DOC = os.path.join(ROOT, "docs", "scaling.md")
PRECISIONS = ("fp32", "bf16")


# ---- the architecture: FLOPs, parameters, buckets ---------------------------------------

def block_fwd(T, R, D, Hd):
    """trainer/vit.c block_forward_flops: T rows in, R rows kept (queries, proj, MLP)."""
    return 2 * T * D * 3 * D + 2 * 2 * R * T * D + 2 * R * D * D + 2 * 2 * R * D * Hd


def block_params(D, Hd):
    return 2 * D + 3 * D * D + 3 * D + D * D + D + 2 * D + D * Hd + Hd + Hd * D + D


class Model:
    def __init__(self, inp, name):
        a, m = inp["architecture"], inp["architecture"]["models"][name]
        self.name, self.label = name, m["label"]
        self.D, self.heads, self.depth = m["embed_dim"], m["num_heads"], a["depth"]
        self.Hd = round(self.D * a["mlp_ratio"])
        self.N = (a["img_size"] // a["patch_size"]) ** 2
        self.T = self.N + 1
        self.S = round(a["mask_ratio"] * self.N) + round(a["replace_ratio"] * self.N)  # scored patches of view 1
        self.pd = a["in_chans"] * a["patch_size"] ** 2
        self.K, self.H, self.O, self.V = a["num_centroids"], a["proj_hidden"], a["proj_dim"], a["views"]
        self.pix_blocks = a["pixel_head_blocks"]
        D, Hd, T, S = self.D, self.Hd, self.T, self.S
        self.patch = 2 * self.N * D * self.pd                      # patch embedding, per view
        self.full = block_fwd(T, T, D, Hd)
        self.last = block_fwd(T, 1 + S, D, Hd) + block_fwd(T, 1, D, Hd)  # last block: kept rows, both views
        self.token = 2 * S * D * self.K
        self.pixel = block_fwd(T, T, D, Hd) + block_fwd(T, S, D, Hd) + 2 * S * D * self.pd
        self.proj = 2 * self.V * (D * self.H + self.H * self.O)
        # buckets in the order their gradients are ready: (name, parameters, backward FLOPs per image)
        blk = block_params(D, Hd)
        heads = (D * self.K + self.K) + self.pix_blocks * blk + 2 * D + D * self.pd + self.pd + \
                (D * self.H + self.H + self.H * self.O + self.O)
        embed = D * self.pd + D + D + T * D + D  # patch weight+bias, cls, pos, mask token
        self.buckets = [("heads", heads, 2 * (self.token + self.pixel + self.proj)),
                        (f"block {self.depth} + final norm", blk + 2 * D, 2 * self.last)]
        self.buckets += [(f"block {k}", blk, 2 * self.V * self.full) for k in range(self.depth - 1, 1, -1)]
        self.buckets.append(("block 1 + embeddings", blk + embed, 2 * self.V * self.full + self.V * self.patch))
        self.encoder_params = self.depth * blk + 2 * D + embed
        self.params = sum(p for _, p, _ in self.buckets)
        bwd = [f for _, _, f in self.buckets]
        self.tau = [sum(bwd[:k + 1]) / sum(bwd) for k in range(len(bwd))]

    def forward_flops(self, batch):
        """trainer/objective.c objective_forward_flops / B (NT-Xent over the local 2B views)."""
        enc = self.V * (self.patch + self.depth * self.full) - self.V * self.full + self.last
        return enc + self.token + self.pixel + self.proj + 2 * (self.V * batch) ** 2 * self.O / batch

    def step_flops(self, batch):
        """objective_step_flops / B: 3x forward, no input gradient of the patch embedding, the tokenizer's product."""
        return 3 * self.forward_flops(batch) - self.V * self.patch + 2 * self.S * self.K * self.pd

    def backward_share(self, batch):
        return sum(f for _, _, f in self.buckets) / self.step_flops(batch)

    def activation_bytes_per_image(self):
        """Rough: per block, view and token about 16 D floats (LN in/out, qkv, attention out, MLP 4D twice)
        plus the attention probabilities (heads x T), fp32; the pixel head's blocks on one view."""
        per_token_block = 16 * self.D + self.heads * self.T
        return 4 * self.T * per_token_block * (self.V * self.depth + self.pix_blocks)


# ---- the cluster ------------------------------------------------------------------------

def gbit(link):
    return link * 1e9 / 8  # bytes/s


def allreduce(nbytes, R, link, lat):
    return 0.0 if R <= 1 else 2 * (R - 1) / R * nbytes / gbit(link) + 2 * (R - 1) * lat


def allgather(total_bytes, R, link, lat):
    return 0.0 if R <= 1 else (R - 1) / R * total_bytes / gbit(link) + (R - 1) * lat


def pipeline_exposed(c, tau, backward):
    """Bucket k (ready at tau_k x backward) is reduced after bucket k-1's reduction; exposed = end - backward."""
    end = 0.0
    for ck, tk in zip(c, tau):
        end = max(end, tk * backward) + ck
    return end - backward


class Cluster:
    def __init__(self, inp):
        self.inp = inp
        self.models = {n: Model(inp, n) for n in inp["architecture"]["models"]}
        ms = inp["measured_step"]
        self.ref = self.models[ms["model"]]
        self.ref_batch = ms["batch"]
        self.per_core_ref = {p: ms[p]["images_per_s"] / ms[p]["cores"] for p in PRECISIONS}
        net = inp["network"]
        self.lat, self.gb = net["latency_s"], net["gradient_bytes_per_param"]
        self.eff_node = inp["nodes"]["intra_node_efficiency"]

    def per_core_rate(self, model, prec):
        m = self.models[model]
        return self.per_core_ref[prec] * self.ref.step_flops(self.ref_batch) / m.step_flops(self.ref_batch)

    def node_rate(self, model, C, prec):
        return C * self.per_core_rate(model, prec) * self.eff_node

    def bucket_comm(self, model, R, link):
        return [allreduce(p * self.gb, R, link, self.lat) for _, p, _ in self.models[model].buckets]

    def contrast_exchange(self, model, R, b, link, negatives=None):
        if (negatives or self.inp["sweep"]["contrast_negatives"]) != "global":
            return 0.0
        m = self.models[model]
        emb = R * b * m.V * m.O * 4
        return 2 * allgather(emb, R, link, self.lat)  # all-gather forward, reduce-scatter of the gradients backward

    def step(self, model, R, b, C, prec, link, negatives=None):
        """Per-rank step: compute, exposed communication of either mode, throughput, efficiency.
        negatives: "global" or "local" (default: the inputs' contrast_negatives)."""
        m = self.models[model]
        compute = b / self.node_rate(model, C, prec)
        backward = m.backward_share(self.ref_batch) * compute
        neg = self.contrast_exchange(model, R, b, link, negatives)
        blocking = allreduce(m.params * self.gb, R, link, self.lat) + neg
        overlapped = (pipeline_exposed(self.bucket_comm(model, R, link), m.tau, backward) if R > 1 else 0.0) + neg
        out = {"compute_s": compute, "backward_s": backward, "negatives_s": neg}
        for mode, exp in (("blocking", blocking), ("overlapped", overlapped)):
            out[mode] = {"exposed_s": exp, "images_per_s": R * b / (compute + exp),
                         "efficiency": compute / (compute + exp)}
        return out

    def hiding_compute(self, model, R, link):
        """Least step compute (s) for which the overlapped reduction is compute-bound: only the last bucket's
        reduction is exposed. sum_{j=k}^{n-1} c_j <= (1 - tau_k) x backward for every k < n."""
        m = self.models[model]
        c = self.bucket_comm(model, R, link)
        share = m.backward_share(self.ref_batch)
        return max(sum(c[k:-1]) / ((1 - m.tau[k]) * share) for k in range(len(c) - 1))

    def hiding_batch(self, model, R, link, C, prec):
        return self.hiding_compute(model, R, link) * self.node_rate(model, C, prec)

    def batch_for_efficiency(self, model, R, link, C, prec, mode, target=0.95, negatives="local"):
        """Least per-rank batch (real-valued) with efficiency >= target; the gradient reduction's exposure
        does not grow with b (global negatives' does: their exchange grows with R x b)."""
        lo, hi = 1e-3, 1e7
        if self.step(model, R, hi, C, prec, link, negatives)[mode]["efficiency"] < target:
            return math.inf
        for _ in range(200):
            mid = math.sqrt(lo * hi)
            if self.step(model, R, mid, C, prec, link, negatives)[mode]["efficiency"] >= target:
                hi = mid
            else:
                lo = mid
        return hi


# ---- the report -------------------------------------------------------------------------

def fmt(x, nd=1):
    if x == math.inf:
        return "∞"
    return f"{x:,.{nd}f}" if abs(x) < 1e5 else f"{x:,.0f}"


def table(head, rows):
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def report(cl):
    inp, sw, hl = cl.inp, cl.inp["sweep"], cl.inp["headline"]
    links, cores, ranks = inp["network"]["links_gbit_per_s"], inp["nodes"]["cores_per_node"], sw["ranks"]
    b_ref, G = sw["per_rank_batch"], sw["global_batch_for_negatives"]
    C_h, prec_h, link_h, R_h = hl["cores_per_node"], hl["precision"], hl["link_gbit_per_s"], hl["ranks"]
    xc = inp["cross_checks"]
    sec, summary = {}, {"inputs": {"per_core_images_per_s_vit_ti": cl.per_core_ref, "latency_s": cl.lat},
                        "models": {}}

    rows = []
    for n, m in cl.models.items():
        bb = xc["bench_batch"][n]
        meas = xc["measured_bf16_images_per_s"].get(n)
        pred = cl.per_core_rate(n, "bf16") * 2
        rows.append([m.label, f"{m.encoder_params / 1e6:.2f} M", f"{m.params / 1e6:.2f} M",
                     f"{m.params * cl.gb / 2 ** 20:.1f} MiB",
                     f"{3 * m.forward_flops(bb) / 1e9:.2f} ({xc['bench_model_gflop_per_image'][n]})",
                     f"{m.step_flops(cl.ref_batch) / 1e9:.2f}", f"{m.backward_share(cl.ref_batch):.2f}",
                     f"{cl.per_core_rate(n, 'fp32'):.3f} / {cl.per_core_rate(n, 'bf16'):.3f}",
                     f"{pred:.2f} vs {meas}" if meas else "(measured)"])
        summary["models"][n] = {"params": m.params, "encoder_params": m.encoder_params,
                                "gradient_mib": m.params * cl.gb / 2 ** 20,
                                "step_gflop_per_image": m.step_flops(cl.ref_batch) / 1e9,
                                "per_core_images_per_s": {p: cl.per_core_rate(n, p) for p in PRECISIONS}}
    sec["models"] = table(["model", "encoder params", "all params (reduced)", "fp32 gradients",
                           "model GFLOP/image (bench log)", "executed step GFLOP/image", "backward share",
                           "img/s per core fp32 / bf16",
                           "bf16 img/s on 2 cores: FLOP-scaled vs measured"], rows)

    # where the overlapped reduction stops hiding
    rows = []
    hide = {}
    for n, m in cl.models.items():
        for link in links:
            ms = [cl.hiding_compute(n, R, link) * 1e3 for R in sw["threshold_ranks"]]
            bs = {(C, p): cl.hiding_batch(n, R_h, link, C, p) for C in cores for p in PRECISIONS}
            hide[(n, link)] = bs
            rows.append([m.label, f"{link} Gb/s"] + [fmt(x, 0) for x in ms] +
                        [fmt(bs[(C, p)], 0) + (" †" if bs[(C, p)] < C else "") for C in cores for p in PRECISIONS])
    sec["hiding"] = table(["model", "link"] + [f"step compute ms, R={R}" for R in sw["threshold_ranks"]] +
                          [f"b at R={R_h}, C={C} {p}" for C in cores for p in PRECISIONS], rows)

    # efficiency at the batch that hides, and 95% batches
    rows = []
    for n, m in cl.models.items():
        for link in links:
            r = [m.label, f"{link} Gb/s"]
            for R in (R_h, ranks[-1]):
                for mode in ("blocking", "overlapped"):
                    r.append(fmt(cl.batch_for_efficiency(n, R, link, C_h, prec_h, mode), 0))
            rows.append(r)
    sec["b95"] = table(["model", "link"] + [f"{mode}, R={R}" for R in (R_h, ranks[-1])
                                            for mode in ("blocking", "overlapped")], rows)

    # throughput and efficiency against R at the reference per-rank batch
    rows = []
    curves = {}
    for n, m in cl.models.items():
        for link in links:
            st = [cl.step(n, R, b_ref, C_h, prec_h, link) for R in ranks]
            curves[(n, link)] = st
            if link != link_h:
                continue
            local = [cl.step(n, R, b_ref, C_h, prec_h, link, "local") for R in ranks]
            negs = sw["contrast_negatives"]
            for mode, neg_mode, sts in (("blocking", negs, st), ("overlapped", negs, st),
                                        ("overlapped", "local", local)):
                rows.append([m.label, mode, neg_mode] +
                            [f"{fmt(s[mode]['images_per_s'], 0)} ({100 * s[mode]['efficiency']:.0f}%)" for s in sts])
    sec["sweep"] = table(["model", "mode", "negatives"] + [f"R={R}" for R in ranks], rows)

    # the global batch that keeps SimCLR's negatives
    rows = []
    neg = {}
    mem_cap = inp["nodes"]["memory_gib"] * 2 ** 30
    for n, m in cl.models.items():
        neg[n] = []
        for R in ranks:
            b = G / R
            st = cl.step(n, R, b, C_h, prec_h, link_h)
            emb = G * m.V * m.O * 4
            logits = 2 * b * 2 * G * 4
            mem = b * m.activation_bytes_per_image() + 2 * logits + 4 * m.params * 4
            e = {"R": R, "b": b, "memory_gib": mem / 2 ** 30, "fits": mem <= mem_cap,
                 "allgather_ms": 1e3 * allgather(emb, R, link_h, cl.lat), "logits_mib": logits / 2 ** 20,
                 "eff_blocking": st["blocking"]["efficiency"], "eff_overlapped": st["overlapped"]["efficiency"],
                 "images_per_s_overlapped": st["overlapped"]["images_per_s"], "compute_ms": 1e3 * st["compute_s"],
                 "per_core_images": b / C_h}
            neg[n].append(e)
            rows.append([m.label, R, fmt(b, 0 if b >= 1 else 2),
                         f"{e['memory_gib']:.1f}" + ("" if e["fits"] else " ✗"), f"{e['logits_mib']:.1f}",
                         f"{e['allgather_ms']:.2f}", f"{e['compute_ms']:.0f}" + ("" if b >= C_h else " †"),
                         f"{100 * e['eff_blocking']:.0f}%", f"{100 * e['eff_overlapped']:.0f}%",
                         fmt(e["images_per_s_overlapped"], 0)])
    sec["negatives"] = table(["model", "R", "b = G/R", "memory per rank GiB", "logits MiB (2b x 2G)", "all-gather ms",
                              "compute ms", "eff. blocking", "eff. overlapped", "img/s overlapped"], rows)

    # cross-check: activation estimate against the measured peak RSS
    rows = []
    for n, m in cl.models.items():
        bb = xc["bench_batch"][n]
        est = bb * m.activation_bytes_per_image() + 4 * m.params * 4
        rows.append([m.label, f"{m.activation_bytes_per_image() / 2 ** 20:.0f}", bb, f"{est / 2 ** 20:.0f}",
                     xc["measured_peak_rss_mb"][n]])
    sec["memory"] = table(["model", "activations MiB/image (estimate)", "bench batch",
                           "estimate at that batch + 4 param arrays, MiB", "measured peak RSS MB"], rows)

    # headline
    mh = cl.models[hl["model"]]
    st_h = cl.step(hl["model"], R_h, b_ref, C_h, prec_h, link_h)
    b_star = hide[(hl["model"], link_h)][(C_h, prec_h)]
    first_bad = {}
    for n in cl.models:
        bad = [e["R"] for e in neg[n] if e["eff_overlapped"] < 0.5]
        first_bad[n] = bad[0] if bad else None
    min_fit = {n: next((e["R"] for e in neg[n] if e["fits"]), None) for n in cl.models}
    crossover = {}
    for n in cl.models:
        worse = [R for R, s in zip(ranks, curves[(n, link_h)])
                 if s["overlapped"]["efficiency"] < s["blocking"]["efficiency"]]
        crossover[n] = worse[0] if worse else None
    summary["headline"] = {
        "config": hl, "per_rank_batch": b_ref,
        "hiding_batch": b_star, "hiding_compute_ms": 1e3 * cl.hiding_compute(hl["model"], R_h, link_h),
        "blocking_loss_pct": 100 * (1 - st_h["blocking"]["efficiency"]),
        "overlapped_loss_pct": 100 * (1 - st_h["overlapped"]["efficiency"]),
        "hiding_batch_by_model_link": {f"{n}@{l}": hide[(n, l)][(C_h, prec_h)] for n in cl.models for l in links},
        "global_batch": G,
        "negatives_min_ranks_fitting_memory": min_fit,
        "negatives_first_ranks_below_50pct": first_bad,
        "overlapped_worse_than_blocking_from_ranks": crossover,
    }
    peak = {n: max(neg[n], key=lambda e: e["images_per_s_overlapped"]) for n in cl.models}
    exposed_at_one_per_core = [f"{cl.models[n].label}, {l} Gb/s, {C} cores, {p} "
                               f"(hidden from b = {hide[(n, l)][(C, p)]:.0f})"
                               for n in cl.models for l in links for C in cores for p in PRECISIONS
                               if hide[(n, l)][(C, p)] > C]
    summary["headline"].update({
        "negatives_peak": {n: {"R": peak[n]["R"], "images_per_s": peak[n]["images_per_s_overlapped"]}
                           for n in cl.models},
        "hidden_at_one_image_per_core_except": exposed_at_one_per_core})
    last_ms = 1e3 * cl.bucket_comm(hl["model"], R_h, link_h)[-1]
    lines = [
        f"- {mh.label}, {link_h} Gb/s, {C_h}-core nodes, {prec_h}, R = {R_h}: the per-block reduction stays hidden "
        f"behind the backward (only the last bucket's {last_ms:.0f} ms exposed) "
        f"down to b = {b_star:.0f} images per rank ({1e3 * cl.hiding_compute(hl['model'], R_h, link_h):.0f} ms of step "
        f"compute); at b = {b_ref} blocking loses {summary['headline']['blocking_loss_pct']:.0f}% of the ideal "
        "throughput, "
        f"overlapped {summary['headline']['overlapped_loss_pct']:.0f}% (global negatives included).",
        f"- Per-rank batch below which the reduction is exposed (R = {R_h}, {C_h}-core nodes, {prec_h}): " + "; ".join(
            f"{cl.models[n].label} " + ", ".join(f"{hide[(n, l)][(C_h, prec_h)]:.0f} at {l} Gb/s" for l in links)
            for n in cl.models) + f". At R = {R_h}, a per-rank batch of one image per core (b = C) hides it for every "
        "model, link, node size and precision of the table" + (", except " + "; ".join(exposed_at_one_per_core)
                                                              if exposed_at_one_per_core else "") + ".",
        f"- Per-block buckets pay the latency {len(mh.buckets)} times: at {link_h} Gb/s and b = {b_ref} the overlapped "
        "step is slower than the blocking one from R = " + ", ".join(
            f"{crossover[n]} ({cl.models[n].label})" if crossover[n] else f"never ({cl.models[n].label})"
            for n in cl.models) + ".",
        f"- SimCLR's negatives (G = {G}, {2 * G - 2} per anchor, b = G/R): " + "; ".join(
            f"{cl.models[n].label} needs R ≥ {min_fit[n]} to fit {inp['nodes']['memory_gib']} GiB per node and "
            f"peaks at R = {peak[n]['R']} ({peak[n]['images_per_s_overlapped']:,.0f} img/s)" for n in cl.models) +
        f" ({C_h}-core nodes, {prec_h}, {link_h} Gb/s, overlapped); more ranks than that make the job slower.",
    ]
    sec["headline"] = "\n".join(lines)
    return sec, summary, curves, neg


def write_doc(sec, path=DOC):
    text = open(path).read()
    for key, body in sec.items():
        begin, end = f"<!-- scaling_model:{key} -->", f"<!-- /scaling_model:{key} -->"
        if begin in text:
            i, j = text.index(begin) + len(begin), text.index(end)
            text = text[:i] + "\n" + body + "\n" + text[j:]
    with open(path, "w") as f:
        f.write(text)


def doc_is_current(sec, path=DOC):
    """The keys whose generated block in the doc differs from `sec` (or is missing)."""
    text = open(path).read()
    stale = []
    for key, body in sec.items():
        block = f"<!-- scaling_model:{key} -->\n{body}\n<!-- /scaling_model:{key} -->"
        if block not in text:
            stale.append(key)
    return stale


def figure(cl, curves, out):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    inp, hl, sw = cl.inp, cl.inp["headline"], cl.inp["sweep"]
    links, ranks = inp["network"]["links_gbit_per_s"], sw["ranks"]
    C, prec, link_h = hl["cores_per_node"], hl["precision"], hl["link_gbit_per_s"]
    colors = {"vit_ti": "tab:blue", "vit_s": "tab:orange", "vit_b": "tab:green"}
    styles = dict(zip(links, (":", "-", "--")))
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.8))
    Rs = [R for R in ranks if R > 1]
    for n, m in cl.models.items():
        for link in links:
            ax[0].plot(Rs, [cl.hiding_batch(n, R, link, C, prec) for R in Rs], styles[link], color=colors[n],
                       label=f"{m.label}, {link} Gb/s")
    ax[0].axhline(C, color="grey", lw=0.8)
    ax[0].annotate(f"b = C = {C}: one image per core", (Rs[0], C * 1.08), fontsize=7, color="grey")
    ax[0].set(xscale="log", yscale="log", xlabel="ranks R (nodes)", ylabel="per-rank batch b",
              title=f"below this b the reduction is exposed\n(overlapped, {C}-core nodes, {prec})")
    ax[0].set_ylim(top=ax[0].get_ylim()[1] * 6)
    ax[0].legend(fontsize=6, ncol=3, loc="upper left")
    ax[0].grid(alpha=0.3, which="both")
    for n, m in cl.models.items():
        st = curves[(n, link_h)]
        ax[1].plot(ranks, [s["overlapped"]["efficiency"] for s in st], "-o", ms=3, color=colors[n],
                   label=f"{m.label} overlapped")
        ax[1].plot(ranks, [s["blocking"]["efficiency"] for s in st], "--", color=colors[n], label=f"{m.label} blocking")
    ax[1].set(xscale="log", ylim=(0, 1.02), xlabel="ranks R (nodes)", ylabel="scaling efficiency",
              title=f"b = {sw['per_rank_batch']} per rank, {link_h} Gb/s, {C}-core nodes, {prec}\n"
                    f"({sw['contrast_negatives']} negatives)")
    ax[1].legend(fontsize=6.5)
    ax[1].grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(out, dpi=90, metadata={"Software": None})
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--inputs", default=INPUTS)
    ap.add_argument("--markdown", action="store_true", help="print the generated doc blocks")
    ap.add_argument("--write-doc", action="store_true", help="update the generated blocks of docs/scaling.md")
    ap.add_argument("--figure", help="write the figure (PNG)")
    args = ap.parse_args(argv)
    with open(args.inputs) as f:
        cl = Cluster(json.load(f))
    sec, summary, curves, _ = report(cl)
    for key, body in sec.items():
        print(f"== {key}\n{body}\n")
    if args.write_doc:
        write_doc(sec)
    if args.figure:
        figure(cl, curves, args.figure)
    print("scaling_summary: " + json.dumps(summary, sort_keys=True, default=lambda x: None if x == math.inf else x))


if __name__ == "__main__":
    sys.exit(main())
