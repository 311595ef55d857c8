import torch

from avsearch.encoders.heads import HeadConfig, ProjectionHead


def test_head_output_is_unit_norm_and_standardises_input() -> None:
    torch.manual_seed(0)
    head = ProjectionHead(HeadConfig(in_dim=8, out_dim=4, hidden=16, dropout=0.0)).eval()
    feats = torch.rand(32, 8) * 5 + 3  # non-negative, off-centre (like aisfx features)
    head.fit_normalisation(feats)
    assert torch.allclose(head.mean, feats.mean(0))
    out = head(feats)
    assert out.shape == (32, 4)
    assert torch.allclose(out.norm(dim=1), torch.ones(32), atol=1e-6)
    # a constant shift of the input that the normalisation absorbs does not change the output
    head.mean += 1.0
    assert torch.allclose(head(feats + 1.0), out, atol=1e-5)


def test_zero_std_is_clamped() -> None:
    head = ProjectionHead(HeadConfig(in_dim=3, out_dim=2, hidden=4))
    head.fit_normalisation(torch.ones(5, 3))
    assert torch.all(head.std > 0)
    assert torch.isfinite(head.eval()(torch.ones(2, 3))).all()
