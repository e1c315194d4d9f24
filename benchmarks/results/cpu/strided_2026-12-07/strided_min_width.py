import torch, sys, json
torch.set_num_threads(2)
from ssconv import SSConv2d
from ssconv.layers import dispatch
from ssconv.utils.timing import measure
rows=[]
cases=[(32,64,16,p,g,pw,sp) for (g,p,pw,sp) in [(1,2,True,"full"),(1,4,True,"full"),(1,8,True,"full"),(1,16,True,"full"),(1,4,False,"full"),(2,4,True,"full"),(1,4,True,"checkerboard")]]
cases += [(32,64,14,4,1,True,"full"),(32,64,14,8,1,True,"full"),(32,64,14,16,1,True,"full"),(64,128,16,8,1,True,"full"),(128,256,16,8,1,True,"full")]
for ci,co,s,per,g,pw,sp in cases:
    l = SSConv2d(ci,co,3,2,1,period=per,groups=g,pointwise=pw,spatial=sp,bias=False)
    x = torch.randn(64,ci,s,s); xg = x.clone().requires_grad_(True)
    def with_min(minw, f):
        old = dispatch.AUTO_FUSED_STRIDED_MIN_WIDTH
        dispatch.AUTO_FUSED_STRIDED_MIN_WIDTH = minw
        try: return f()
        finally: dispatch.AUTO_FUSED_STRIDED_MIN_WIDTH = old
    def tr(): l(xg).sum().backward()
    def inf():
        with torch.no_grad(): return l(x)
    paths = (with_min(1, lambda: l.call_path(xg)), with_min(99, lambda: l.call_path(xg)), with_min(1, lambda: l.call_path(x)), with_min(99, lambda: l.call_path(x)))
    st = measure({"tr_f": lambda: with_min(1, tr), "tr_s": lambda: with_min(99, tr), "in_f": lambda: with_min(1, inf), "in_s": lambda: with_min(99, inf)}, repeats=9)
    t = {k: v.median*1e3 for k,v in st.items()}
    r = dict(layer=f"{ci}->{co}@{s}/s2 G{g} P{per} pw{int(pw)} {sp}", paths=paths, **t, train_gain=t["tr_s"]/t["tr_f"], infer_gain=t["in_s"]/t["in_f"])
    rows.append(r)
    print(f"{r['layer']}: train pixels {t['tr_f']:.2f} vs stock {t['tr_s']:.2f} ({r['train_gain']:.2f}x)  infer pixels {t['in_f']:.2f} vs stock {t['in_s']:.2f} ({r['infer_gain']:.2f}x)  {paths}", flush=True)
json.dump(rows, open(sys.argv[1], "w"), indent=1)
