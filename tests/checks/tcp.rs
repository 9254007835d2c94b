//! `TcpCheck` against real listeners on 127.0.0.1.

use tokio::net::TcpListener;
use tower_health::{Check, Status, checks::tcp::TcpCheck};

use crate::support::{self, Proxy};

#[tokio::test]
async fn connects_to_a_listener_and_fails_on_a_closed_port() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let result = TcpCheck::new(addr.to_string()).check().await;
    assert_eq!(result.status(), Status::Healthy, "{result:?}");
    let result = TcpCheck::new(format!("localhost:{}", addr.port()))
        .check()
        .await;
    assert_eq!(
        result.status(),
        Status::Healthy,
        "names are resolved: {result:?}"
    );
    drop(listener);

    let result = TcpCheck::new(addr.to_string()).check().await;
    assert_eq!(result.status(), Status::Unhealthy);
    assert!(
        result.message().unwrap().contains(&addr.to_string()),
        "{result:?}"
    );

    let result = TcpCheck::new("127.0.0.1").check().await;
    assert_eq!(result.status(), Status::Unhealthy, "no port: {result:?}");
    assert!(
        result.message().unwrap().contains("host:port"),
        "{result:?}"
    );
}

#[tokio::test]
async fn port_closed_and_reopened() {
    // Anything listening will do as the dependency; the proxy's port is the
    // one that closes and reopens.
    let target = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = Proxy::start(target.local_addr().unwrap()).await;
    let check = TcpCheck::new(proxy.addr.to_string());
    let (_health, app, runs) = support::app_with("smtp", check).await;
    support::outage(
        &app,
        &runs,
        "smtp",
        "tcp closed",
        false,
        3,
        async || proxy.down().await,
        async || proxy.restore().await,
    )
    .await;
    drop(target);
}
