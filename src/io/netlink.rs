//! Link configuration over rtnetlink: bridges, enslaving the TAP, MTU, up, addresses.
//!
//! The product never shells out to `ip`; everything here is a netlink request. A bridge that does
//! not exist is created (and left in place on exit, because containers may be attached to it).

use std::net::IpAddr;

use futures::TryStreamExt;
use rtnetlink::{Handle, LinkBridge, LinkUnspec};

use crate::config::Cidr;

/// A netlink connection whose driver runs on the current tokio runtime.
pub struct Netlink {
    handle: Handle,
}

fn to_io(context: &str, e: rtnetlink::Error) -> std::io::Error {
    std::io::Error::other(format!("{context}: {e}"))
}

impl Netlink {
    pub fn connect() -> std::io::Result<Netlink> {
        let (connection, handle, _) = rtnetlink::new_connection()?;
        tokio::spawn(connection);
        Ok(Netlink { handle })
    }

    /// The raw rtnetlink handle, for requests this type has no method for (src/io/veth.rs).
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// The index of the link called `name`, or `None` if there is no such link.
    pub async fn link_index(&self, name: &str) -> std::io::Result<Option<u32>> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        match links.try_next().await {
            Ok(Some(msg)) => Ok(Some(msg.header.index)),
            Ok(None) => Ok(None),
            Err(rtnetlink::Error::NetlinkError(e))
                if e.raw_code() == -libc::ENODEV || e.raw_code() == -libc::ENOENT =>
            {
                Ok(None)
            }
            Err(e) => Err(to_io(&format!("looking up link {name}"), e)),
        }
    }

    /// Creates bridge `name` (up) and returns its index.
    pub async fn create_bridge(&self, name: &str) -> std::io::Result<u32> {
        self.handle
            .link()
            .add(LinkBridge::new(name).build())
            .execute()
            .await
            .map_err(|e| to_io(&format!("creating bridge {name}"), e))?;
        self.link_index(name)
            .await?
            .ok_or_else(|| std::io::Error::other(format!("bridge {name} vanished after creation")))
    }

    /// Sets the link's MTU, optionally its bridge, and brings it up.
    pub async fn configure_link(
        &self,
        index: u32,
        mtu: u16,
        controller: Option<u32>,
    ) -> std::io::Result<()> {
        let mut msg = LinkUnspec::new_with_index(index).mtu(u32::from(mtu));
        if let Some(bridge) = controller {
            msg = msg.controller(bridge);
        }
        self.handle
            .link()
            .set(msg.up().build())
            .execute()
            .await
            .map_err(|e| to_io("configuring the TAP link", e))
    }

    /// Brings a link up (used for a bridge meshd did not create but found down).
    pub async fn set_up(&self, index: u32) -> std::io::Result<()> {
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(|e| to_io("bringing link up", e))
    }

    pub async fn add_address(&self, index: u32, cidr: Cidr) -> std::io::Result<()> {
        let addr: IpAddr = cidr.addr;
        match self
            .handle
            .address()
            .add(index, addr, cidr.prefix)
            .execute()
            .await
        {
            Ok(()) => Ok(()),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EEXIST => Ok(()),
            Err(e) => Err(to_io(&format!("adding address {cidr}"), e)),
        }
    }

    /// Removes `cidr` from link `index`; an address that is not there is not an error.
    pub async fn del_address(&self, index: u32, cidr: Cidr) -> std::io::Result<()> {
        let mut found = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .set_address_filter(cidr.addr)
            .set_prefix_length_filter(cidr.prefix)
            .execute();
        while let Some(message) = found
            .try_next()
            .await
            .map_err(|e| to_io("listing addresses", e))?
        {
            match self.handle.address().del(message).execute().await {
                Ok(()) => {}
                Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EADDRNOTAVAIL => {}
                Err(e) => return Err(to_io(&format!("removing address {cidr}"), e)),
            }
        }
        Ok(())
    }

    /// Routes `subnet` out of link `index` (scope link) in routing table `table`, and sends
    /// traffic to `subnet` to that table with a rule of `priority`. Either already in place is
    /// not an error.
    pub async fn route_subnet_via_table(
        &self,
        subnet: (std::net::Ipv4Addr, u8),
        index: u32,
        table: u32,
        priority: u32,
    ) -> std::io::Result<()> {
        use rtnetlink::packet_route::route::RouteScope;
        use rtnetlink::packet_route::rule::RuleAction;
        use rtnetlink::RouteMessageBuilder;
        let exists = |e: &rtnetlink::Error| matches!(e, rtnetlink::Error::NetlinkError(m) if m.raw_code() == -libc::EEXIST);
        let route = RouteMessageBuilder::<std::net::Ipv4Addr>::new()
            .destination_prefix(subnet.0, subnet.1)
            .output_interface(index)
            .table_id(table)
            .scope(RouteScope::Link)
            .build();
        match self.handle.route().add(route).execute().await {
            Err(e) if !exists(&e) => return Err(to_io("adding the subnet route", e)),
            _ => {}
        }
        let rule = self
            .handle
            .rule()
            .add()
            .v4()
            .destination_prefix(subnet.0, subnet.1)
            .table_id(table)
            .priority(priority)
            .action(RuleAction::ToTable)
            .execute()
            .await;
        match rule {
            Err(e) if !exists(&e) => Err(to_io("adding the subnet rule", e)),
            _ => Ok(()),
        }
    }
}
