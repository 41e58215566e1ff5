//! One file per method, named after it; each holds the method and its [`Descriptor`](super::registry::Descriptor),
//! which `registry.rs` lists.

pub mod cam;
pub mod conv_output;
pub mod deconvnet;
pub mod grad_cam;
pub mod guided_backprop;
pub mod guided_grad_cam;
pub mod input_x_gradient;
pub mod integrated_gradients;
pub mod random_map;
pub mod sobel;
pub mod vanilla_gradient;
