//! `quiver.v1.FeatureService` as the node serves it: `GetOnlineFeatures` decoded as a
//! [`LookupRequest`] (feature references as bytes, no `String` each), every other method
//! by the generated server.
//!
//! The generated server decodes a lookup into `GetOnlineFeaturesRequest`, whose 50
//! references of a 50-feature lookup are 50 allocations before the plan cache is even
//! asked; the hot path needs them only as cache-key bytes. This router sends that one
//! method through tonic's own unary machinery (`tonic::server::Grpc`, the same
//! compression and message-size settings as the generated server) with a codec that
//! decodes the wire twin instead. Same service name, same paths, same wire format: to a
//! caller, grpcurl and reflection nothing changed.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use quiver_proto::lookup_request::LookupRequest;
use quiver_proto::packed::PackedAnswer;
use quiver_proto::v1::feature_service_server::FeatureServiceServer;
use tonic::codec::{CompressionEncoding, EnabledCompressionEncodings};
use tonic::codegen::{Body, BoxFuture, Service, StdError, http};
use tonic::server::NamedService;
use tonic::{Request, Response, Status};
use tonic_prost::ProstCodec;

use super::FeatureServiceImpl;

/// The lookup method's path.
const LOOKUP_PATH: &str = "/quiver.v1.FeatureService/GetOnlineFeatures";

/// The feature service's router (see the module docs).
#[derive(Clone)]
pub struct FeatureRoutes {
    lookup: Arc<FeatureServiceImpl>,
    generated: FeatureServiceServer<FeatureServiceImpl>,
    accept: EnabledCompressionEncodings,
    send: EnabledCompressionEncodings,
    max_decoding: usize,
    max_encoding: usize,
}

impl FeatureRoutes {
    /// Serves `service`, refusing requests above `max_decoding` bytes and responses
    /// above `max_encoding` bytes (before and after compression, as tonic does), and
    /// accepting zstd-compressed requests; responses are compressed (zstd, when the
    /// caller accepts it) only with `compress_responses`.
    pub fn new(
        service: FeatureServiceImpl,
        max_decoding: usize,
        max_encoding: usize,
        compress_responses: bool,
    ) -> Self {
        let service = Arc::new(service);
        let mut generated = FeatureServiceServer::from_arc(service.clone())
            .max_decoding_message_size(max_decoding)
            .max_encoding_message_size(max_encoding)
            .accept_compressed(CompressionEncoding::Zstd);
        let mut accept = EnabledCompressionEncodings::default();
        accept.enable(CompressionEncoding::Zstd);
        let mut send = EnabledCompressionEncodings::default();
        if compress_responses {
            generated = generated.send_compressed(CompressionEncoding::Zstd);
            send.enable(CompressionEncoding::Zstd);
        }
        FeatureRoutes {
            lookup: service,
            generated,
            accept,
            send,
            max_decoding,
            max_encoding,
        }
    }
}

impl NamedService for FeatureRoutes {
    const NAME: &'static str = <FeatureServiceServer<FeatureServiceImpl> as NamedService>::NAME;
}

impl<B> Service<http::Request<B>> for FeatureRoutes
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() != LOOKUP_PATH {
            return self.generated.call(req);
        }
        let method = Lookup(self.lookup.clone());
        let mut grpc =
            tonic::server::Grpc::new(ProstCodec::<PackedAnswer, LookupRequest>::default())
                .apply_compression_config(self.accept, self.send)
                .apply_max_message_size_config(Some(self.max_decoding), Some(self.max_encoding));
        Box::pin(async move { Ok(grpc.unary(method, req).await) })
    }
}

/// The lookup as a tonic unary method.
struct Lookup(Arc<FeatureServiceImpl>);

impl tonic::server::UnaryService<LookupRequest> for Lookup {
    type Response = PackedAnswer;
    type Future = BoxFuture<Response<PackedAnswer>, Status>;

    fn call(&mut self, request: Request<LookupRequest>) -> Self::Future {
        let service = self.0.clone();
        Box::pin(async move { service.lookup(request).await })
    }
}
