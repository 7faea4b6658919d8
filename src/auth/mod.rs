pub mod bearer_header;
