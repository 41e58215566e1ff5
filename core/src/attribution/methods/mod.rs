//! One file per method, named after it; each holds the method and its [`Descriptor`](super::registry::Descriptor),
//! which `registry.rs` lists.

pub mod ablation_cam;
pub mod blur_ig;
pub mod cam;
pub mod conv_output;
pub mod deconvnet;
pub mod deep_lift;
pub mod eigen_cam;
pub mod feature_ablation;
pub mod grad_cam;
pub mod grad_cam_plus_plus;
pub mod gradient_shap;
pub mod guided_backprop;
pub mod guided_grad_cam;
pub mod guided_ig;
pub mod hires_cam;
pub mod input_x_gradient;
pub mod integrated_gradients;
pub mod kernel_shap;
pub mod layer_cam;
pub mod lime;
pub mod lrp;
pub mod occlusion;
pub mod random_map;
pub mod rise;
pub mod score_cam;
pub mod sobel;
pub mod vanilla_gradient;
pub mod xgrad_cam;
