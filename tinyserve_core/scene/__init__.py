"""The scene lab: a labelled primitive scene, its analytic renderer, a semantic radiance
field trained from it, a bake for interactive rendering, language queries and OMPL
planning. Qt-free; the GUI drives `SceneLab`.

    from .lab import SceneLab
    lab = SceneLab("room")                       # spec + shipped weights + bake
    cam = lab.camera(azimuth=30, elevation=40, size=256)
    frame = lab.render(cam)                      # RenderResult: rgb, depth, probs, label, entropy
    lab.pick(cam, x, y)                          # PickResult: point, label, confidence
    q = lab.query("the red mug", frame)          # QueryResult: status, candidates (+ extents), relevancy, best
    if q.best is not None:                       # None when nothing was found
        lab.plan(q, Robot("ground", 0.12))       # PlanResult: path, goal, approach distance, note

Modules: spec (JSON scenes), geometry (ray hits, SDF), camera, analytic (ground truth),
field (sparse voxel grid + MLP), volume (training rendering), interactive and adaptive
(frames), train, weights, bake, metrics,
query (phrases: reading a query; relations: geometry's answers; concepts: absent things),
planner (passages: why a target is unreachable), lab, cli (`tinyserve train-scene`).
"""
