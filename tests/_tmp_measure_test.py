import numpy as np, test_runtime as t
from test_runtime import art
def test_measure(art):
    for fmt in ("int8","16x8","fp32.tflite","onnx"):
        c=t.load(art, fmt); p=c.predict(art.paths)
        print(fmt, np.abs(p-art.ref).max(), c.engine.input, c.engine.output)
    s=t.Classifier.load(art.odd, format="static_batch"); print(s.engine.input)
    print(art.ref.max(1))
