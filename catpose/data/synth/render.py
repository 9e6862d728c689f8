"""Headless CPU rendering by ray casting with Embree (trimesh + embreex): colour, soft mask, depth.

Each pixel is sampled ``supersample²`` times; the soft mask is the fraction of samples that hit the
object (CO3D masks are soft too). Shading is Lambertian under one fixed light, so the appearance of
a surface point does not depend on the viewpoint (what SfM and feature matching expect); a solid 3D
noise texture, fixed to the object, gives SfM keypoints.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import trimesh

from catpose.data.camera import Camera
from catpose.data.synth.shapes import ObjectInstance


class SolidNoise:
    """Smooth random function of 3D position: a sum of random sinusoids (band-limited noise)."""

    def __init__(
        self,
        rng: np.random.Generator,
        scale: float,
        n: int = 24,
        fmin: float = 4.0,
        fmax: float = 24.0,
        contrast: float = 1.5,
    ):
        dirs = rng.normal(size=(n, 3))
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        freqs = np.exp(rng.uniform(np.log(fmin), np.log(fmax), size=n)) / scale
        self.w = (dirs * freqs[:, None]).astype(np.float32)
        self.phase = rng.uniform(0, 2 * np.pi, size=n).astype(np.float32)
        self.amp = contrast / np.sqrt(n)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        # float32: numpy's vectorised sin makes this several times faster than float64
        arg = np.asarray(x, dtype=np.float32) @ self.w.T
        arg += self.phase
        return np.tanh(self.amp * np.sin(arg, out=arg).sum(axis=1, dtype=np.float64))


@dataclass
class RenderOutput:
    image: np.ndarray  # (H, W, 3) uint8
    mask: np.ndarray  # (H, W) float32 in [0, 1], fraction of samples on the object
    depth: np.ndarray  # (H, W) float32, camera Z (0 where nothing was hit)
    normals: np.ndarray  # (H, W, 3) float32 world-space normals of the object (0 elsewhere)


class SceneRenderer:
    """An object instance on a textured ground disc, in the object's canonical frame."""

    def __init__(
        self, instance: ObjectInstance, rng: np.random.Generator, light_dir=None, ground: bool = True
    ):
        mesh, face_part = instance.merged()
        self.extent = float(np.linalg.norm(mesh.bounds[1] - mesh.bounds[0]))
        meshes, part_of_face = [mesh], [face_part]
        n_parts = len(instance.parts)
        albedo = [p.albedo for p in instance.parts]
        amps = [p.texture_amp for p in instance.parts]
        if ground:
            # a textured floor and, beyond the camera orbit, clutter (boxes and columns of random
            # colours): a non-planar background, as in real object-centric videos, which SfM needs
            disc = trimesh.creation.cylinder(radius=4.0 * self.extent, height=1e-3 * self.extent, sections=64)
            disc.apply_translation([0, 0, -1e-3 * self.extent])
            meshes.append(disc)
            part_of_face.append(np.full(len(disc.faces), len(albedo)))
            g = rng.uniform(0.35, 0.65)
            albedo.append(np.array([g, g * rng.uniform(0.85, 1.0), g * rng.uniform(0.7, 0.95)]))
            amps.append(0.6)
            n_clutter = 10
            for k in range(n_clutter):
                ang = 2 * np.pi * (k + rng.uniform(0.2, 0.8)) / n_clutter
                rad = self.extent * rng.uniform(2.4, 3.6)
                size = self.extent * rng.uniform(0.3, 0.8, 3) * np.array([1, 1, 2])
                if rng.uniform() < 0.5:
                    c = trimesh.creation.box(extents=size)
                else:
                    c = trimesh.creation.cylinder(radius=size[0] / 2, height=size[2], sections=24)
                c.apply_transform(trimesh.transformations.rotation_matrix(rng.uniform(0, np.pi), [0, 0, 1]))
                c.apply_translation([rad * np.cos(ang), rad * np.sin(ang), size[2] / 2])
                meshes.append(c)
                part_of_face.append(np.full(len(c.faces), len(albedo)))
                albedo.append(rng.uniform(0.2, 0.9, 3))
                amps.append(0.6)
        self.mesh = trimesh.util.concatenate(meshes)
        self.face_part = np.concatenate(part_of_face)
        self.n_object_parts = n_parts
        self.albedo = np.stack(albedo)
        self.texture_amp = np.array(amps)
        self.noise = SolidNoise(rng, scale=self.extent)
        self.mid_noise = SolidNoise(rng, scale=self.extent, n=48, fmin=15.0, fmax=60.0, contrast=5.0)
        self.fine_noise = SolidNoise(rng, scale=self.extent, n=48, fmin=60.0, fmax=200.0, contrast=5.0)
        if light_dir is None:
            light_dir = np.array([rng.uniform(-0.5, 0.5), rng.uniform(-0.5, 0.5), 1.0])
        self.light = np.asarray(light_dir, dtype=np.float64) / np.linalg.norm(light_dir)
        self.background = np.array([0.55, 0.6, 0.68]) * rng.uniform(0.8, 1.1)
        from trimesh.ray.ray_pyembree import RayMeshIntersector

        self.intersector = RayMeshIntersector(self.mesh)

    def render(self, camera: Camera, supersample: int = 2) -> RenderOutput:
        """Renders the scene through ``camera`` (whose world frame is the canonical frame)."""
        H, W = camera.image_size
        s = supersample
        hi = Camera(camera.R, camera.T, camera.focal_length, camera.principal_point, (H * s, W * s),
                    camera.intrinsics_format)
        origins, dirs = hi.pixel_rays()
        n = len(dirs)
        locs, ray_idx, tri_idx = self.intersector.intersects_location(origins, dirs, multiple_hits=False)
        color = np.tile(self.background, (n, 1))
        obj = np.zeros(n, dtype=bool)
        depth = np.zeros(n)
        normals = np.zeros((n, 3))
        if len(ray_idx):
            part = self.face_part[tri_idx]
            nrm = self.mesh.face_normals[tri_idx]
            # face the normal towards the camera (open surfaces: the mug's inside)
            flip = (nrm * dirs[ray_idx]).sum(1) > 0
            nrm[flip] *= -1
            tex = 1.0 + self.texture_amp[part][:, None] * (
                0.4 * self.noise(locs) + 0.3 * self.mid_noise(locs) + 0.3 * self.fine_noise(locs))[:, None]
            shade = 0.35 + 0.65 * np.clip(nrm @ self.light, 0.0, 1.0)
            color[ray_idx] = np.clip(self.albedo[part] * tex * shade[:, None], 0, 1)
            obj[ray_idx] = part < self.n_object_parts
            depth[ray_idx] = hi.world_to_camera(locs)[:, 2]
            normals[ray_idx] = nrm
        # average the s x s samples of each pixel
        def pool(a):
            a = a.reshape(H, s, W, s, -1)
            return a.mean(axis=(1, 3))

        img = pool(color)
        objf = obj.astype(np.float64)
        mask = pool(objf)[..., 0]
        # depth/normals of the object averaged over object samples; elsewhere of what was hit
        wsum = np.maximum(pool(objf)[..., 0], 1e-9)
        d_obj = pool(depth * objf)[..., 0] / wsum
        d_any = pool(depth)[..., 0]
        depth_img = np.where(mask > 0, d_obj, d_any)
        n_obj = pool(normals * objf[:, None]) / wsum[..., None]
        n_obj[mask == 0] = 0
        return RenderOutput(
            image=(img * 255 + 0.5).clip(0, 255).astype(np.uint8),
            mask=mask.astype(np.float32),
            depth=depth_img.astype(np.float32),
            normals=n_obj.astype(np.float32),
        )
